"""The two training stages of a conversion, as losses and parameter selections (the loop is in ``run.py``).

1. Attention transfer: the pretrained weights are frozen; each converted layer sees the teacher's hidden states
   (the teacher's attention output is what flows on) and learns to reproduce that output (relative MSE per layer)
   and, on inputs up to ``kl_max_len`` tokens, the teacher's attention weights (KL). Only the new parameters train.
2. Recovery: the converted model runs on its own outputs; LoRA on the attention projections (through ``peft``) or
   full fine-tuning, with distillation to the teacher: next-token KL for language models, relative MSE of the last
   hidden states for encoders (plus, optionally, pooled-embedding cosine and pairwise-similarity terms).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nalaformer.convert.attention import TransferRecord, relative_mse
from nalaformer.convert.swap import ConversionError, converted_modules, new_parameters, set_mode

LORA_TARGETS = {
    "bert": ["query", "key", "value"],
    "gpt2": ["c_attn", "c_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "nala_block": ["in_proj", "out_proj"],
}


def freeze_for_transfer(model: nn.Module) -> list[nn.Parameter]:
    """Freeze every parameter but the conversion's new ones; returns those (what stage 1 trains)."""
    for param in model.parameters():
        param.requires_grad_(False)
    trainable = [param for _, param in new_parameters(model)]
    for param in trainable:
        param.requires_grad_(True)
    if not trainable:
        raise ConversionError("the converted model has no new parameters to train in attention transfer")
    return trainable


def transfer_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], *, kl_weight: float = 1.0, kl_max_len: int = 64
) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage-1 loss of one batch: mean per-layer relative MSE + ``kl_weight`` x mean per-layer attention KL."""
    record = TransferRecord(kl_max_len=kl_max_len if kl_weight > 0 else 0)
    layers = [module for _, module in converted_modules(model)]
    set_mode(model, "transfer")
    for module in layers:
        module.record = record
    try:
        model(**batch)
    finally:
        for module in layers:
            module.record = None
        set_mode(model, "linear")
    if not record.mse:
        raise ConversionError("attention transfer: no converted layer ran on the batch")
    mse = torch.stack(record.mse).mean()
    loss = mse
    metrics = {"mse": float(mse.detach())}
    if record.kl:
        kl = torch.stack(record.kl).mean()
        loss = loss + kl_weight * kl
        metrics["kl"] = float(kl.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def make_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of the converted model running the original softmax attention (the exact pretrained model).

    Stage 1 leaves the pretrained weights untouched, so this is the teacher at any point before recovery.
    """
    teacher = copy.deepcopy(model)
    set_mode(teacher, "softmax")
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def _valid(batch: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    mask = batch.get("attention_mask")
    if mask is None:
        return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
    return mask.bool()


def pooled_embeddings(hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [B, T, C]`` over real tokens (``valid [B, T]``), L2-normalised: ``[B, C]`` (the sentence
    embedding of all-MiniLM-L6-v2 and :func:`nalaformer.convert.evaluate.embed`)."""
    weight = valid.float().unsqueeze(-1)
    pooled = (hidden.float() * weight).sum(1) / weight.sum(1).clamp_min(1.0)
    return F.normalize(pooled, dim=-1)


def distillation_loss(
    student_out: Any,
    teacher_out: Any,
    batch: dict[str, torch.Tensor],
    *,
    embedding_weight: float = 0.0,
    similarity_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token KL (models with ``logits``) or relative MSE of ``last_hidden_state``, over real tokens.

    For encoders, ``embedding_weight > 0`` adds that multiple of the mean cosine distance between the student's and
    the teacher's pooled sentence embeddings (:func:`pooled_embeddings`): the quantity the embedding measures compare.
    ``similarity_weight > 0`` adds that multiple of the mean squared difference between the student's and the
    teacher's cosine similarities of every pair of passages in the batch (the pairs whose ranking the Spearman
    measure of :mod:`nalaformer.convert.evaluate` compares).
    """
    if getattr(student_out, "logits", None) is not None:
        valid = _valid(batch, student_out.logits)
        log_p = F.log_softmax(teacher_out.logits.float(), dim=-1)
        log_q = F.log_softmax(student_out.logits.float(), dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        loss = (kl * valid).sum() / valid.sum().clamp_min(1)
        return loss, {"loss": float(loss.detach()), "kl": float(loss.detach())}
    hidden = student_out.last_hidden_state
    valid = _valid(batch, hidden)
    mse = relative_mse(hidden, teacher_out.last_hidden_state.detach(), valid)
    metrics = {"mse": float(mse.detach())}
    loss = mse
    if embedding_weight > 0 or similarity_weight > 0:
        teacher_pooled = pooled_embeddings(teacher_out.last_hidden_state.detach(), valid)
        student_pooled = pooled_embeddings(hidden, valid)
    if embedding_weight > 0:
        distance = 1.0 - (student_pooled * teacher_pooled).sum(-1).mean()
        loss = loss + embedding_weight * distance
        metrics["cosine_distance"] = float(distance.detach())
    if similarity_weight > 0:
        if hidden.shape[0] < 2:
            raise ValueError(f"similarity_weight > 0 needs at least 2 passages per batch, got {hidden.shape[0]}")
        pairs = ~torch.eye(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        gap = (student_pooled @ student_pooled.T - teacher_pooled @ teacher_pooled.T)[pairs]
        similarity = gap.pow(2).mean()
        loss = loss + similarity_weight * similarity
        metrics["similarity_mse"] = float(similarity.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def recovery_loss(
    student: nn.Module,
    teacher: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    embedding_weight: float = 0.0,
    similarity_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage-2 loss of one batch: the converted model distilled towards the teacher's outputs."""
    with torch.no_grad():
        teacher_out = teacher(**batch)
    return distillation_loss(
        student(**batch), teacher_out, batch, embedding_weight=embedding_weight, similarity_weight=similarity_weight
    )


def _families(model: nn.Module) -> set[str]:
    return {module.family for _, module in converted_modules(model)}


def prepare_recovery(model: nn.Module, *, lora_rank: int = 8, lora_alpha: float = 16.0, full: bool = False) -> Any:
    """Make ``model`` trainable for stage 2: LoRA on the attention projections (default) or every weight.

    Returns:
        The model to train (a ``peft`` model with LoRA; ``model`` itself with ``full=True``). The conversion's new
        parameters stay trainable in both cases. Undo with :func:`finish_recovery` before saving.
    """
    if full:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if lora_rank <= 0:
        raise ConversionError(f"lora_rank must be a positive int, got {lora_rank!r}")
    try:
        from peft import LoraConfig, get_peft_model
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "LoRA recovery needs peft: pip install 'nalaformer[convert]' (or pass full fine-tuning instead)"
        ) from error
    targets = sorted({name for family in _families(model) for name in LORA_TARGETS[family]})
    config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    peft_model = get_peft_model(model, config)
    for _, param in new_parameters(peft_model.base_model.model):
        param.requires_grad_(True)
    return peft_model


def finish_recovery(model: Any) -> nn.Module:
    """Merge LoRA weights into the projections (a no-op after full fine-tuning); returns the plain model."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model
