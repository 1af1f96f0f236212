"""``nalaformer generate --checkpoint PATH --prompt TEXT``: print a continuation from a trained language model.

``PATH`` is a run folder of ``nalaformer train lm`` (its newest valid checkpoint, or ``--ema`` weights), one of its
``checkpoints/step_*`` folders, or a Hugging Face folder written by ``NaLaForCausalLM.save_pretrained`` (with the
tokenizer in ``PATH/tokenizer``, or ``--tokenizer byte|gpt2``). The prompt is prefilled with the chunked form and each
new token costs one recurrent step, so the decoding state of linear layers stays the same size however long the text.

This module is a command: like the other sub-commands it uses the tools below ``cli.py`` (the run-folder reader of
``nalaformer.train``, the tokenizers of ``nalaformer.data``), imported inside the functions; no library code imports it.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from nalaformer.train.lm_loading import load_model_and_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nalaformer generate``."""
    parser.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or save_pretrained folder")
    parser.add_argument("--prompt", required=True, help="the text to continue (must not be empty)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default: 200)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: 0.8)")
    parser.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens, 0 = all (50)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0 = off)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--ema", action="store_true", help="run folders: use the EMA weights")
    parser.add_argument("--tokenizer", default=None, choices=("byte", "gpt2"), help="save_pretrained folders only")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def generate_text(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    greedy: bool = False,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 1.0,
    seed: int = 0,
) -> tuple[str, dict[str, float]]:
    """Continue ``prompt``; returns ``(continuation text, stats)`` with the token count, seconds and state bytes.

    Args:
        model (NaLaForCausalLM): the model (on its device, eval mode).
        tokenizer: a ``nalaformer.data`` tokenizer (``encode`` / ``decode``).
        prompt (str): non-empty text.
        max_new_tokens (int): tokens to generate, >= 1. Default: 200.
        greedy (bool): greedy decoding instead of sampling. Default: False.
        temperature (float): > 0. Default: 0.8.
        top_k (int): >= 0 (0 = no top-k filter). Default: 50.
        top_p (float): in (0, 1]. Default: 1.0.
        seed (int): seed of the sampling. Default: 0.
    """
    import torch

    from nalaformer.models.lm.compat import CACHE_FIELD

    if not prompt:
        raise ValueError("--prompt is empty: give at least one character to continue")
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {temperature}")
    if top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"--top-k must be >= 0 and --top-p in (0, 1], got {top_k} and {top_p}")
    ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=model.device)
    if ids.shape[1] == 0:
        raise ValueError(f"the prompt {prompt!r} encodes to no token")
    limit = model.config.max_position_embeddings
    if model.model.has_bounded_context and ids.shape[1] + max_new_tokens > limit:
        raise ValueError(
            f"prompt ({ids.shape[1]} tokens) + --max-new-tokens ({max_new_tokens}) exceeds this model's context of "
            f"{limit} tokens (it has softmax layers); shorten one of them"
        )
    sampling = {} if greedy else {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            # runs are built with use_cache=False (training); decoding needs the cache
            use_cache=True,
            pad_token_id=model.config.pad_token_id if model.config.pad_token_id is not None else 0,
            return_dict_in_generate=True,
            **sampling,
        )
    seconds = time.perf_counter() - start
    new_tokens = out.sequences[0, ids.shape[1] :]
    cache = getattr(out, CACHE_FIELD, None)
    stats = {
        "prompt_tokens": ids.shape[1],
        "new_tokens": int(new_tokens.numel()),
        "seconds": seconds,
        "state_bytes": cache.nbytes() if cache is not None else 0,
    }
    return tokenizer.decode(new_tokens), stats


def run(args: argparse.Namespace) -> int:
    """Load, generate, print the prompt and its continuation (stats go to stderr)."""
    from transformers.utils import logging as transformers_logging

    from nalaformer.train.distributed import resolve_device

    # generate() warns whenever a text outgrows max_position_embeddings, which bounds softmax layers only; the
    # limit that matters is checked in generate_text with a clear error.
    transformers_logging.set_verbosity_error()
    if not args.prompt:
        raise ValueError("--prompt is empty: give at least one character to continue")
    model, tokenizer = load_model_and_tokenizer(args.checkpoint, ema=args.ema, tokenizer=args.tokenizer)
    model.to(resolve_device(args.device))
    text, stats = generate_text(
        model,
        tokenizer,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        greedy=args.greedy,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    print(args.prompt + text)
    rate = stats["new_tokens"] / max(stats["seconds"], 1e-9)
    print(
        f"nalaformer generate: {stats['new_tokens']} tokens in {stats['seconds']:.2f} s ({rate:.1f} tokens/s) after "
        f"a {stats['prompt_tokens']}-token prompt; decoding state {stats['state_bytes'] / 1024:.1f} KiB",
        file=sys.stderr,
    )
    return 0
