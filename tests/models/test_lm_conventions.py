"""The language model under the conventions transformers' own tests and Trainer rely on: loss keywords and
token-normalised gradient accumulation, torch.export, GradientCheckpointingLayer, ``cache.layers``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from transformers.modeling_layers import GradientCheckpointingLayer

from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM
from nalaformer.models.lm.modeling_nala import LOSS_KEYWORDS
from tests.assertions import assert_close

VOCAB = 40


def build(**overrides) -> NaLaForCausalLM:
    torch.manual_seed(0)
    return NaLaForCausalLM(NaLaConfig.from_preset("tiny", vocab_size=VOCAB, **overrides)).eval()


def ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def reference_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of position t against labels[t + 1] (ignore -100), and the number of targets."""
    targets = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets, reduction="sum")
    return total, int((targets != -100).sum())


# loss keywords ------------------------------------------------------------------------------------------------------


def test_num_items_in_batch_gives_token_normalised_accumulation() -> None:
    model = build()
    # two micro-batches with different numbers of real targets, as under gradient accumulation
    first, second = ids(2, 9, seed=1), ids(3, 5, seed=2)
    first_labels = first.clone()
    first_labels[0, :6] = -100
    batches = [(first, first_labels), (second, second.clone())]
    with torch.no_grad():
        sums, counts = zip(*(reference_token_loss(model(x).logits, y) for x, y in batches))
    total_items = sum(counts)
    expected = sum(sums) / total_items
    accumulated = sum(
        model(x, labels=y, num_items_in_batch=torch.tensor(total_items)).loss for x, y in batches
    )  # Trainer passes a tensor
    assert_close("accumulated loss", accumulated, expected, atol=1e-6)
    # without num_items_in_batch each micro-batch is its own mean, which would weight tokens unequally
    plain = model(first, labels=first_labels).loss
    assert_close("mean loss", plain, sums[0] / counts[0], atol=1e-6)


def test_shift_labels_are_used_as_given() -> None:
    model = build()
    x = ids(2, 7)
    shifted = torch.cat([x[:, 1:], torch.full((2, 1), -100)], dim=1)
    with torch.no_grad():
        from_labels = model(x, labels=x).loss
        from_shifted = model(x, shift_labels=shifted).loss
        ignore_other = model(x, labels=torch.where(x == 3, 7, x), ignore_index=7).loss
    assert_close("shift_labels", from_shifted, from_labels, atol=1e-6)
    assert torch.isfinite(ignore_other)


def test_forward_accepts_the_loss_keywords_and_names_any_other() -> None:
    model = build()
    assert set(LOSS_KEYWORDS) >= {"num_items_in_batch", "shift_labels"}
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['num_item_in_batch'\]"):
        model(ids(1, 4), labels=ids(1, 4), num_item_in_batch=3)
    with pytest.raises(ValueError, match=r"shift_labels must have the shape of the inputs \[B, T\] = \(1, 4\)"):
        model(ids(1, 4), shift_labels=ids(1, 3))


def test_trainer_sees_loss_keywords() -> None:
    # Trainer passes num_items_in_batch only to models whose forward takes **kwargs
    from transformers import Trainer, TrainingArguments

    model = build()
    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args)
    assert trainer.model_accepts_loss_kwargs


# torch.export -------------------------------------------------------------------------------------------------------


class _Logits(torch.nn.Module):
    def __init__(self, model: NaLaForCausalLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids, attention_mask=attention_mask, use_cache=False).logits


@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "left-padded"])
def test_torch_export_matches_eager(padded: bool) -> None:
    model = _Logits(build(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1))
    x = ids(2, 6)
    args = (x,)
    if padded:
        mask = torch.ones(2, 6, dtype=torch.long)
        mask[0, :2] = 0
        args = (x, mask)
    exported = torch.export.export(model, args)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(*args), model(*args))
        # the value checks are skipped while exporting, not removed: eager calls still run them
        bad = x.clone()
        bad[0, 0] = VOCAB
        with pytest.raises(ValueError, match=f"token id {VOCAB}, outside the vocabulary"):
            model(bad, *args[1:])


# gradient checkpointing ---------------------------------------------------------------------------------------------


def test_decoder_layers_checkpoint_through_the_transformers_layer_class() -> None:
    model = build().train()
    assert all(isinstance(layer, GradientCheckpointingLayer) for layer in model.model.layers)
    x = ids(2, 9)
    reference = torch.autograd.grad(model(x, labels=x).loss, model.model.embed_tokens.weight)[0]
    # transformers 5.x renamed gradient_checkpointing_enable to activation_checkpointing_enable
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    calls = []
    for layer in model.model.layers:
        assert layer.gradient_checkpointing
        func = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, _f=func, **k: calls.append(1) or _f(*a, **k)
    loss = model(x, labels=x).loss
    grad = torch.autograd.grad(loss, model.model.embed_tokens.weight)[0]
    assert len(calls) == len(model.model.layers)
    assert_close("grad", grad, reference, atol=1e-6)
    with pytest.warns(UserWarning, match="use_cache=False"):
        assert model(x, use_cache=True).logits.shape == (2, 9, VOCAB)


# cache.layers -------------------------------------------------------------------------------------------------------


def test_cache_layers_expose_each_layers_state() -> None:
    config = dict(num_hidden_layers=3, layer_mixers=["nala", "softmax", "deltanet"])
    model = build(**config)
    with torch.no_grad():
        out = model(ids(2, 5), use_cache=True)
    cache = out.past_key_values
    layers = cache.layers
    assert len(layers) == 3 and all(layer.is_initialized for layer in layers)
    heads, head_dim = model.config.num_attention_heads, model.config.hidden_size // model.config.num_attention_heads
    assert layers[1].keys.shape == layers[1].values.shape == (2, heads, 5, head_dim)
    assert layers[0].keys is None and isinstance(layers[0].recurrent_states, tuple)  # NaLa: one state per stream
    assert layers[2].recurrent_states.shape[:2] == (2, heads)
    for layer, state in zip(layers, cache.states):
        assert layer.state is state
        assert layer.conv_states is state.conv
    with pytest.raises(AttributeError, match="read-only"):
        cache.layers = [None]
