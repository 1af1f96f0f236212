"""How close a converted encoder is to its teacher: embeddings, neighbours, a probe on real labels, attention.

All measures work on held-out passages (plays never used in the conversion):

- sentence embeddings (mean of the last hidden states over real tokens, L2-normalised: all-MiniLM-L6-v2's pooling);
- the teacher-student cosine of each passage's embedding;
- the Spearman correlation of all pairwise similarities (student vs teacher);
- top-1 / top-10 nearest-neighbour agreement (fraction of each passage's teacher neighbours the student keeps);
- a linear probe (logistic regression, stratified 5-fold cross-validation) predicting the play of a passage from its
  frozen embedding, teacher vs student;
- per layer, the attention row entropy of teacher and student and its Pearson correlation with the query norm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nalaformer.convert.attention import LinearizedAttention
from nalaformer.convert.data import tokenize
from nalaformer.convert.swap import converted_modules


@torch.no_grad()
def embed(model: nn.Module, tokenizer: Any, texts: list[str], *, max_length: int, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised mean-pooled embeddings ``[N, C]`` of ``texts``."""
    model.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenize(tokenizer, texts[start : start + batch_size], max_length)
        hidden = model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(chunks)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(x)
    ranks[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return ranks


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two flat tensors (0 when either is constant)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denominator) if denominator > 0 else 0.0


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two flat tensors (ties broken by order; the values here are continuous)."""
    return pearson(_ranks(x.double()), _ranks(y.double()))


def embedding_agreement(teacher: torch.Tensor, student: torch.Tensor, neighbours: int = 10) -> dict[str, float]:
    """Cosine, Spearman of pairwise similarities and top-1 / top-``neighbours`` agreement of two embedding sets."""
    if teacher.shape != student.shape:
        raise ValueError(f"teacher {tuple(teacher.shape)} and student {tuple(student.shape)} embeddings differ")
    count = teacher.shape[0]
    cosine = (teacher * student).sum(-1) / (teacher.norm(dim=-1) * student.norm(dim=-1)).clamp_min(1e-12)
    sim_t, sim_s = teacher @ teacher.T, student @ student.T
    upper = torch.triu_indices(count, count, offset=1)
    eye = torch.eye(count, dtype=torch.bool)
    top_t = sim_t.masked_fill(eye, -2.0).topk(neighbours, dim=-1).indices
    top_s = sim_s.masked_fill(eye, -2.0).topk(neighbours, dim=-1).indices
    overlap = (top_t[:, :, None] == top_s[:, None, :]).any(-1).float().mean()
    return {
        "cosine": float(cosine.mean()),
        "spearman": spearman(sim_t[upper[0], upper[1]], sim_s[upper[0], upper[1]]),
        "top1": float((top_t[:, 0] == top_s[:, 0]).float().mean()),
        f"top{neighbours}": float(overlap),
    }


def probe_accuracy(embeddings: torch.Tensor, labels: list[str], *, folds: int = 5, seed: int = 0) -> float:
    """Mean accuracy of a logistic-regression probe (stratified ``folds``-fold cross-validation)."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError("the linear probe needs scikit-learn: pip install 'nalaformer[data]'") from error
    probe = LogisticRegression(C=10.0, max_iter=2000)
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, embeddings.double().numpy(), labels, cv=splits).mean())


@torch.no_grad()
def attention_statistics(model: nn.Module, batch: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """Per converted layer: mean row entropy (nats) of teacher and student and its correlation with ``||q||``.

    The query norm is the pretrained one (what the teacher's softmax sees); correlations pool every real row of
    every head of the layer after removing each head's mean, so a head's offset does not count as correlation.
    """
    layers = [(path, m) for path, m in converted_modules(model) if isinstance(m, LinearizedAttention)]
    for _, module in layers:
        module.capture = []
    model.eval()
    try:
        model(**batch)
        rows = []
        for path, module in layers:
            captured = module.capture[0]
            valid = captured["valid"]
            norm = captured["query_norm"]
            row = {"layer": path}
            for who in ("teacher", "student"):
                entropy = captured[f"{who}_entropy"]
                row[f"{who}_entropy"] = float(entropy[valid].mean())
                row[f"{who}_corr"] = pearson(_centred(entropy, valid), _centred(norm, valid))
            rows.append(row)
        return rows
    finally:
        for _, module in layers:
            module.capture = None


def _centred(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[B, H, T]`` values of real rows, each head's mean removed, flattened."""
    values = values.double()
    weight = valid.double()
    mean = (values * weight).sum((0, 2), keepdim=True) / weight.sum((0, 2), keepdim=True).clamp_min(1.0)
    return (values - mean)[valid]
