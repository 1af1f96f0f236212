"""lm-evaluation-harness adapter: score a trained NaLa language model on harness tasks (optional extra).

Needs ``pip install 'nalaformer[harness]'`` (``lm_eval``, which brings ``datasets``). Importing this module registers
the model type ``"nalaformer"`` with the harness, so both of these work::

    nalaformer harness --checkpoint runs/lm --tasks my_task --include-path tasks/ --local-only   # local YAML tasks

    import lm_eval
    import nalaformer.train.harness  # registers "nalaformer"
    results = lm_eval.simple_evaluate(model="nalaformer", model_args="pretrained=runs/lm", tasks=["my_task"], ...)

lm-evaluation-harness 0.4 finds model types only in its own registry (no plugin entry points), so
``lm_eval --model nalaformer`` on the command line knows the name only after this import; ``nalaformer harness`` does
it. A ``save_pretrained`` folder with a tokenizer needs no import at all through the harness's own Hugging Face type:
``lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True`` (the folder's ``auto_map`` imports
nalaformer; the scores equal this adapter's, which the tests check).

The model is any folder :func:`nalaformer.train.lm_loading.load_model_and_tokenizer` reads (a ``nalaformer train lm``
run, a checkpoint, or a ``save_pretrained`` folder). The three request types of the harness:

- ``loglikelihood(context, continuation)``: one forward over ``context + continuation`` (truncated on the left to
  ``max_length`` tokens); the log-probability of the continuation's tokens and whether greedy decoding picks each.
  Requests are batched longest first with right padding, which a causal model never attends to.
- ``loglikelihood_rolling(text)``: the text's total log-probability, in windows of ``max_length`` tokens where every
  token is predicted once (the harness's own window helper), for perplexity tasks.
- ``generate_until(context, {"until": [...], "max_gen_toks": N})``: greedy (or sampled, with ``do_sample``)
  decoding with the model's constant-size cache, cut at the first stop string.

An empty context is conditioned on a prefix token: the tokenizer's end-of-text token (GPT-2 BPE), else the encoding of
``"\\n"`` (character and byte tokenizers); a character tokenizer without ``"\\n"`` rejects empty contexts.
No task or dataset is downloaded by this module; harness tasks that fetch from the Hugging Face Hub need network
access the harness itself provides.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ModuleNotFoundError as error:  # the command's parser still loads, so --help works without the extra
    _MISSING = error
    LM = object

    def register_model(*_names: str):
        return lambda cls: cls
else:
    _MISSING = None

from nalaformer.reporting import to_json
from nalaformer.train.lm_loading import load_model_and_tokenizer

INSTALL_HINT = "the lm-evaluation-harness adapter needs the harness extra: pip install 'nalaformer[harness]'"


def _require_harness() -> None:
    if _MISSING is not None:
        raise ModuleNotFoundError(f"{INSTALL_HINT} ({_MISSING})")


@register_model("nalaformer")
class NaLaHarnessLM(LM):
    """A NaLa causal LM (any registered mixer) behind the harness's ``LM`` interface.

    Args:
        pretrained (str | Path): run, checkpoint or ``save_pretrained`` folder (see the module docstring).
        batch_size (int | str): requests per forward for ``loglikelihood``; >= 1. Default: 8.
        max_length (int, optional): the longest token window scored at once; default the model's
            ``max_position_embeddings``. Models with softmax layers cannot exceed it.
        device (str): ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. Default: ``"cpu"``.
        ema (bool | str): run folders: score the EMA weights. Default: False.
        tokenizer (str, optional): ``"byte"`` or ``"gpt2"`` for a ``save_pretrained`` folder without its own.
    """

    def __init__(
        self,
        pretrained: str | Path,
        batch_size: int | str = 8,
        max_length: int | str | None = None,
        device: str = "cpu",
        ema: bool | str = False,
        tokenizer: str | None = None,
        **unused: Any,
    ) -> None:
        _require_harness()
        super().__init__()
        from nalaformer.train.distributed import resolve_device

        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"NaLaHarnessLM: batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = load_model_and_tokenizer(pretrained, ema=_as_bool(ema), tokenizer=tokenizer)
        self._device = resolve_device(device)
        self.model.to(self._device)
        limit = self.model.config.max_position_embeddings
        self.max_length = limit if max_length is None else int(max_length)
        if self.max_length < 2:
            raise ValueError(f"NaLaHarnessLM: max_length must be >= 2, got {self.max_length}")
        if self.model.model.has_bounded_context and self.max_length > limit:
            raise ValueError(
                f"NaLaHarnessLM: max_length={self.max_length} exceeds this model's context of {limit} tokens "
                "(it has softmax layers)"
            )
        self.batch_size = batch_size
        self.prefix_token_id = self._prefix_token()

    # ----------------------------------------------------------------------------------------------------- tokens

    def _prefix_token(self) -> int | None:
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:
            return int(eos)
        try:
            ids = self.tokenizer.encode("\n")
        except ValueError:  # a character vocabulary without a newline
            return None
        return ids[-1] if ids else None

    def tok_encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text)) if text else []

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of ``context`` and of ``continuation`` after it; white space that ends the context moves to the
        continuation (the harness's convention), and an empty context becomes the prefix token."""
        trailing = len(context) - len(context.rstrip())
        if trailing:
            context, continuation = context[:-trailing], context[-trailing:] + continuation
        whole = self.tok_encode(context + continuation)
        context_ids = self.tok_encode(context)
        continuation_ids = whole[len(context_ids) :]
        if whole[: len(context_ids)] != context_ids:  # a merge across the boundary (BPE): encode the parts apart
            continuation_ids = self.tok_encode(continuation)
        if not context_ids:
            context_ids = [self._required_prefix()]
        if not continuation_ids:
            raise ValueError(f"NaLaHarnessLM: the continuation {continuation!r} encodes to no token")
        return context_ids, continuation_ids

    def _required_prefix(self) -> int:
        if self.prefix_token_id is None:
            raise ValueError(
                "NaLaHarnessLM: an empty context needs a prefix token, and this character vocabulary has neither an "
                "end-of-text token nor '\\n'"
            )
        return self.prefix_token_id

    # --------------------------------------------------------------------------------------------------- scoring

    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """``(sum of log p(continuation token), all greedy)`` for each ``(context ids, continuation ids)``."""
        # the window: the last max_length tokens of context + continuation, predicting the continuation's tokens
        windows = []
        for context, continuation in pairs:
            if len(continuation) > self.max_length:
                raise ValueError(
                    f"NaLaHarnessLM: a continuation of {len(continuation)} tokens does not fit max_length="
                    f"{self.max_length}"
                )
            tokens = (context + continuation)[-(self.max_length + 1) :]
            windows.append((tokens[:-1], continuation))
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(windows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            longest = len(windows[batch[0]][0])
            inputs = torch.zeros(len(batch), longest, dtype=torch.long)
            for row, index in enumerate(batch):
                tokens = windows[index][0]
                inputs[row, : len(tokens)] = torch.tensor(tokens)
            logits = self.model(input_ids=inputs.to(self._device), use_cache=False).logits.float()
            log_probs = F.log_softmax(logits, dim=-1)
            for row, index in enumerate(batch):
                tokens, continuation = windows[index]
                targets = torch.tensor(continuation, device=log_probs.device)
                span = log_probs[row, len(tokens) - len(continuation) : len(tokens)]
                total = span.gather(-1, targets[:, None]).sum().item()
                greedy = bool((span.argmax(-1) == targets).all())
                results[index] = (total, greedy)
        return results

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        pairs = [self._encode_pair(*request.args) for request in requests]
        results = self._score(pairs)
        for request, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        totals = []
        for request in requests:
            (text,) = request.args
            tokens = self.tok_encode(text)
            if not tokens:
                raise ValueError("NaLaHarnessLM.loglikelihood_rolling: the text encodes to no token")
            windows = [
                make_disjoint_window(window)
                for window in get_rolling_token_windows(
                    token_list=tokens,
                    prefix_token=self._required_prefix(),
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            total = sum(score for score, _ in self._score(windows))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            totals.append(total)
        return totals

    @torch.no_grad()
    def generate_until(self, requests: list[Any]) -> list[str]:
        outputs = []
        for request in requests:
            context, options = request.args
            options = dict(options or {})
            until = options.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(options.pop("max_gen_toks", 256))
            do_sample = bool(options.pop("do_sample", False))
            temperature = float(options.pop("temperature", 1.0) or 0.0)
            if temperature == 0.0:
                do_sample = False
            ids = self.tok_encode(context) or [self._required_prefix()]
            if self.model.model.has_bounded_context:  # softmax layers: prompt + new tokens must fit max_length
                max_new = min(max_new, self.max_length - 1)
                ids = ids[-(self.max_length - max_new) :]
            sampling = {"temperature": temperature, "top_k": 0} if do_sample else {}
            out = self.model.generate(
                torch.tensor([ids], device=self._device),
                max_new_tokens=max_new,
                do_sample=do_sample,
                use_cache=True,
                pad_token_id=self.model.config.pad_token_id if self.model.config.pad_token_id is not None else 0,
                **sampling,
            )
            text = self.tokenizer.decode(out[0, len(ids) :])
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            self.cache_hook.add_partial("generate_until", request.args, text)
            outputs.append(text)
        return outputs


def _as_bool(value: bool | str) -> bool:
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"NaLaHarnessLM: ema must be true or false, got {value!r}")
        return value.lower() in ("true", "1")
    return bool(value)


def evaluate_tasks(
    checkpoint: str | Path,
    tasks: list[str],
    *,
    include_path: str | Path | None = None,
    builtin_tasks: bool = True,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    ema: bool = False,
) -> dict[str, Any]:
    """Run harness ``tasks`` on a trained model; returns the harness's ``results`` dictionary (metrics per task).

    Args:
        checkpoint: run, checkpoint or ``save_pretrained`` folder.
        tasks: harness task names (from the harness, or from YAML files under ``include_path``).
        include_path: a folder of task YAML files (e.g. a local JSONL task: ``dataset_path: json`` with
            ``dataset_kwargs: {data_files: ...}``). Default: none.
        builtin_tasks: also index the harness's own task catalogue (about 15,000 YAML files, which takes tens of
            seconds); ``False`` looks only under ``include_path``. Default: True.
        num_fewshot, limit: as in ``lm_eval.simple_evaluate``.
        batch_size, device, ema: as in :class:`NaLaHarnessLM`.
    """
    _require_harness()
    import lm_eval
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise ValueError("evaluate_tasks: give at least one task name")
    if include_path is not None and not Path(include_path).is_dir():
        raise FileNotFoundError(f"--include-path {str(include_path)!r} is not a folder of task YAML files")
    if not builtin_tasks and include_path is None:
        raise ValueError("builtin_tasks=False (--local-only) needs --include-path FOLDER with the task YAML files")
    manager = TaskManager(
        include_path=str(include_path) if include_path is not None else None, include_defaults=builtin_tasks
    )
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown harness task(s) {unknown}; local tasks need --include-path FOLDER")
    model = NaLaHarnessLM(checkpoint, batch_size=batch_size, device=device, ema=ema)
    output = lm_eval.simple_evaluate(
        model=model,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=False,
        bootstrap_iters=0,
    )
    return output["results"]


# ------------------------------------------------------------------------------------------------------ command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nalaformer harness``."""
    parser.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or save_pretrained folder")
    parser.add_argument("--tasks", nargs="+", required=True, help="harness task names")
    parser.add_argument("--include-path", default=None, help="folder of extra task YAML files (local tasks)")
    parser.add_argument(
        "--local-only", action="store_true", help="index only --include-path, not the harness's ~15,000 tasks"
    )
    parser.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (task default if unset)")
    parser.add_argument("--limit", type=float, default=None, help="examples per task (a fraction if < 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="requests per forward (default: 8)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--ema", action="store_true", help="run folders: use the EMA weights")
    parser.add_argument("--output", default=None, help="also write the results as JSON to this file")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print one JSON line per task."""
    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    results = evaluate_tasks(
        args.checkpoint,
        args.tasks,
        include_path=args.include_path,
        builtin_tasks=not args.local_only,
        num_fewshot=args.num_fewshot,
        limit=limit,
        batch_size=args.batch_size,
        device=args.device,
        ema=args.ema,
    )
    for task, metrics in results.items():
        print(json.dumps(to_json({"task": task, **metrics}), default=str))
    if args.output:
        Path(args.output).write_text(json.dumps(to_json(results), indent=1, default=str), encoding="utf-8")
    return 0
