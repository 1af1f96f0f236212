"""Worker processes of the study that stop with it: on Ctrl-C, on an error, and when the study is killed.

- Workers ignore SIGINT: a Ctrl-C in a terminal reaches the whole process group, and the study (not each worker)
  decides what happens, by :func:`stop_workers`: queued jobs are cancelled and running ones terminated. A job cut
  this way loses at most the steps since its last checkpoint (checkpoints are written atomically) and resumes from
  it when the study is run again.
- Workers die with the study even when it is killed with SIGKILL (no handler runs then): on Linux the kernel sends
  them SIGKILL when their parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere, and as a second guard, a thread in
  each worker exits the process within a second of its parent's death (its parent process id changes).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 1.0


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    # also covers a parent that died before prctl took effect
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_init(threads: int, parent: int) -> None:
    """Initializer of a study worker: ignore Ctrl-C, die with ``parent``, use ``threads`` intra-op threads."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def stop_workers(pool: concurrent.futures.ProcessPoolExecutor, grace_seconds: float = 10.0) -> None:
    """Cancel the queued jobs of ``pool`` and terminate its running workers (SIGTERM, then SIGKILL)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def map_in_workers(
    function: Callable[..., Any], calls: Iterable[tuple], *, workers: int, threads: int = 1
) -> Iterator[tuple[tuple, Any]]:
    """Run ``function(*args)`` for each ``args`` of ``calls`` in ``workers`` spawned study workers (``threads``
    intra-op threads each) and yield ``(args, result)`` as each call finishes.

    ``calls`` is read lazily, one call each time a worker is free, so it may stop early (the boundary sections'
    ``--max-minutes`` stops handing out cells that way). Ctrl-C, an error in the caller's loop or closing the iterator
    early stops the pool at once (:func:`stop_workers`): running calls are terminated. ``function`` must be importable
    by name (spawned processes) and should return its failures as values rather than raise them.
    """
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=worker_init, initargs=(threads, os.getpid())
    )
    queue = iter(calls)
    running: dict[concurrent.futures.Future, tuple] = {}

    def hand_out() -> None:
        while len(running) < workers:
            args = next(queue, None)
            if args is None:
                return
            running[pool.submit(function, *args)] = args

    try:
        hand_out()
        while running:
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                yield running.pop(future), future.result()
            hand_out()
    except BaseException:
        stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
