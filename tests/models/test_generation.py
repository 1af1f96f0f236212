"""Generation with the NaLa LM: cached decoding equals the full forward, left padding, generate(), fixed-size state."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from nalaformer.layers import attention_spec, list_attentions
from nalaformer.models.lm import NaLaCache, NaLaConfig, NaLaForCausalLM
from nalaformer.models.lm.compat import CACHE_FIELD
from nalaformer.ops.nala import api as nala_op
from tests.assertions import assert_close, assert_greedy_tokens_match

VOCAB = 96


MIXERS = {"nala": {}, "softmax": {"mixer": "softmax"}, "hybrid": {"hybrid_every": 2}}


def build(seed: int = 0, **overrides) -> NaLaForCausalLM:
    torch.manual_seed(seed)
    # chunk_size 8 so the prompts below cross chunk boundaries
    options = {"nala": {"chunk_size": 8}, "nala_cosine": {"chunk_size": 8}, "elu": {"chunk_size": 8}}
    overrides.setdefault("mixer_options", options)
    return NaLaForCausalLM(NaLaConfig.from_preset("tiny", **overrides)).eval()


def random_ids(batch: int, length: int, seed: int = 1, low: int = 0) -> torch.Tensor:
    return torch.randint(low, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def left_padded(sequences: list[torch.Tensor], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad, dtype=torch.long)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, length - len(sequence) :] = sequence
        mask[row, length - len(sequence) :] = 1
    return ids, mask


CAUSAL_MIXERS = [name for name in list_attentions() if attention_spec(name).causal]


@pytest.mark.parametrize("name", [*CAUSAL_MIXERS, "hybrid"])
def test_every_mixer_decodes_step_by_step_like_the_full_forward(name):
    """Prefill (chunked, across the default 64-token chunk) plus single steps, with one left-padded row, equals the
    full forward; the padded row equals its sequence alone; linear states do not grow with the context."""
    overrides = {"hybrid_every": 2} if name == "hybrid" else {"mixer": name}
    model = build(**overrides, mixer_options={})
    ids = random_ids(2, 72, low=1)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        out = model(ids[:, :67], attention_mask=mask[:, :67])
        size_at_67 = out.cache.layer_nbytes()
        steps = [out.logits]
        for t in range(67, 72):
            steps.append(model(ids[:, t : t + 1], cache=out.cache, attention_mask=mask[:, : t + 1]).logits)
        alone = model(ids[:1, 5:]).logits[0]
    stepped = torch.cat(steps, dim=1)
    assert out.cache.seen_tokens == 72
    assert_close(f"{name} steps vs full", full[mask.bool()], stepped[mask.bool()], atol=1e-5)
    assert_close(f"{name} padded row vs alone", alone, stepped[0, 5:], atol=1e-5)
    for mixer_name, before, after in zip(model.config.mixer_per_layer, size_at_67, out.cache.layer_nbytes()):
        assert (after > before) if mixer_name == "softmax" else (after == before), mixer_name


def test_prefill_in_pieces_equals_one_prefill():
    model = build(hybrid_every=2)
    ids = random_ids(2, 30)
    with torch.no_grad():
        full = model(ids).logits
        cache = model(ids[:, :11]).cache
        middle = model(ids[:, 11:23], cache=cache).logits
        last = model(ids[:, 23:], cache=cache).logits
    assert_close("pieces", full[:, 11:], torch.cat([middle, last], dim=1), atol=1e-5)


def test_prefill_uses_the_chunked_form_and_steps_the_recurrent_form(monkeypatch):
    calls = {"prefill": 0, "step": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(nala_op.NaLaCausal, "apply", counting("prefill", nala_op.NaLaCausal.apply))
    monkeypatch.setattr(nala_op, "nala_step", counting("step", nala_op.nala_step))
    model = build()
    with torch.no_grad():
        model.generate(random_ids(1, 12), max_new_tokens=5, do_sample=False)
    # per layer: one chunked prefill, then one decoding step per generated token after the first
    assert calls == {"prefill": 2, "step": 2 * 4}


@pytest.mark.parametrize("name", ["nala", "softmax", "hybrid"])
def test_left_padded_batch_matches_each_sequence_alone(name):
    model = build(**MIXERS[name], pad_token_id=0)
    sequences = [random_ids(1, n, seed=n, low=1)[0] for n in (5, 13, 9)]
    ids, mask = left_padded(sequences)
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_logits=True,
        )
        step_logits = torch.stack(out.logits, dim=1)
        new_tokens = out.sequences[:, ids.shape[1] :]
        for row, sequence in enumerate(sequences):
            alone = model(torch.cat([sequence, new_tokens[row]])[None]).logits[0]
            # logits predicting each generated token, from the cached padded run vs the sequence alone
            expected = alone[len(sequence) - 1 : len(sequence) - 1 + new_tokens.shape[1]]
            assert_close(f"row {row}", expected, step_logits[row], ratio=1e-5, atol=1e-5)
            greedy_alone = model.generate(sequence[None], max_new_tokens=6, do_sample=False)[0, len(sequence) :]
            continuations = torch.stack([torch.cat([sequence, new_tokens[row]]), torch.cat([sequence, greedy_alone])])
            assert_greedy_tokens_match(model, continuations[:1], continuations[1:])


def test_greedy_generate_with_and_without_cache_agree():
    model = build(hybrid_every=2)
    ids = random_ids(2, 10)
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=8, do_sample=False)
        uncached = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
        # greedy by hand: full forward, argmax, append
        manual = ids
        for _ in range(8):
            manual = torch.cat([manual, model(manual).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert cached.shape == (2, 18)
    assert_greedy_tokens_match(model, manual, uncached)
    assert_greedy_tokens_match(model, manual, cached)


def test_sampling_is_seeded_and_stays_inside_top_k():
    model = build()
    ids = random_ids(2, 6)
    kwargs = {"max_new_tokens": 10, "do_sample": True, "top_k": 5, "temperature": 1.5}
    with torch.no_grad():
        torch.manual_seed(3)
        first = model.generate(ids, **kwargs)
        torch.manual_seed(3)
        second = model.generate(ids, **kwargs)
        logits = model(first).logits
    assert torch.equal(first, second)
    for step in range(6, 16):
        top = logits[:, step - 1].topk(5, dim=-1).indices
        assert (top == first[:, step : step + 1]).any(dim=-1).all(), step
    greedy = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert not torch.equal(first, greedy)


def test_beam_search_scores_equal_the_full_forward_log_probabilities():
    model = build(hybrid_every=2)
    ids = random_ids(1, 7)
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=6,
            num_beams=3,
            num_return_sequences=3,
            do_sample=False,
            length_penalty=0.0,
            early_stopping=True,
            return_dict_in_generate=True,
            output_scores=True,
        )
        log_probs = model(out.sequences).logits.log_softmax(-1)
    targets = out.sequences[:, 7:]
    expected = log_probs[:, 6:-1].gather(-1, targets[..., None]).squeeze(-1).sum(-1)
    assert len(set(map(tuple, out.sequences.tolist()))) == 3
    assert_close("beam scores", expected, out.sequences_scores, ratio=1e-5, atol=1e-4)


def test_generate_resumes_from_a_cache_it_is_given():
    model = build(hybrid_every=2)
    ids = random_ids(2, 12)
    with torch.no_grad():
        fresh = model.generate(ids, max_new_tokens=5, do_sample=False)
        cache = model(ids[:, :9]).cache
        # generate's keyword for a cache is `cache` since transformers renamed it (`past_key_values` before)
        resumed = model.generate(ids, **{CACHE_FIELD: cache}, max_new_tokens=5, do_sample=False)
    assert_greedy_tokens_match(model, fresh, resumed)


def test_assisted_decoding_is_refused_clearly():
    model = build()
    with pytest.raises(ValueError, match="stateful"):
        model.generate(random_ids(1, 4), max_new_tokens=2, assistant_model=build(seed=1))
    with pytest.raises(ValueError, match="cannot be rolled back"):
        NaLaCache(2).crop(1)


def test_generate_refuses_an_empty_prompt():
    with pytest.raises(ValueError, match="empty prompt"):
        build().generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=2)


def test_saving_and_loading_keeps_generations_identical(tmp_path):
    model = build(hybrid_every=2)
    model.save_pretrained(tmp_path)
    loaded = NaLaForCausalLM.from_pretrained(tmp_path).eval()
    ids = random_ids(2, 8)
    with torch.no_grad():
        assert torch.equal(
            model.generate(ids, max_new_tokens=8, do_sample=False),
            loaded.generate(ids, max_new_tokens=8, do_sample=False),
        )
        samples = []
        for candidate in (model, loaded):
            torch.manual_seed(11)
            samples.append(candidate.generate(ids, max_new_tokens=8, do_sample=True, top_k=0))
    assert torch.equal(samples[0], samples[1])


def test_linear_state_is_fixed_size_while_the_softmax_cache_grows():
    model = build(hybrid_every=2)
    sizes = {}
    with torch.no_grad():
        for length in (16, 256):
            sizes[length] = model(random_ids(1, length)).cache.layer_nbytes()
    nala_16, softmax_16 = sizes[16]
    nala_256, softmax_256 = sizes[256]
    assert nala_16 == nala_256 > 0
    # keys + values (fp32, 32 channels each) and a bool validity flag per cached token
    per_token = 2 * 32 * 4 + 1
    assert softmax_256 - softmax_16 == per_token * (256 - 16)


def test_row_selection_equals_running_the_selected_rows():
    model = build(hybrid_every=2)
    ids = random_ids(3, 10)
    index = torch.tensor([2, 0, 0])
    with torch.no_grad():
        cache = model(ids[:, :9]).cache
        cache.batch_select_indices(index)
        stepped = model(ids[index, 9:], cache=cache).logits
        reference = model(ids[index]).logits[:, 9:]
    assert_close("selected rows", reference, stepped, atol=1e-5)
    cache.batch_repeat_interleave(2)
    assert cache.batch_size == 6


def test_decode_mask_must_extend_the_cached_one():
    model = build()
    cache = model(random_ids(2, 5)).cache
    with pytest.raises(ValueError, match=r"attention_mask must have shape \[2, 1\] or \[2, 6\] \(5 cached \+ 1 new"):
        model(random_ids(2, 1), cache=cache, attention_mask=torch.ones(2, 5, dtype=torch.long))


def test_generate_command_prints_the_greedy_continuation_of_a_run(trained_lm_run, capsys):
    from nalaformer.cli import main
    from nalaformer.train.generate_command import load_model_and_tokenizer

    capsys.readouterr()
    argv = ["generate", "--checkpoint", str(trained_lm_run / "run"), "--prompt", "Shall", "--greedy"]
    assert main([*argv, "--max-new-tokens", "9"]) == 0
    captured = capsys.readouterr()
    model, tokenizer = load_model_and_tokenizer(trained_lm_run / "run")
    ids = torch.tensor([tokenizer.encode("Shall")])
    with torch.no_grad():
        for _ in range(9):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert captured.out == tokenizer.decode(ids[0]) + "\n"
    assert "9 tokens" in captured.err and "decoding state" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prompt", ""], "--prompt is empty"),
        (["--prompt", "Zz"], "not in the"),
        (["--prompt", "Shall", "--max-new-tokens", "40"], "exceeds this model's context of 16 tokens"),
        (["--prompt", "Shall", "--tokenizer", "byte"], "--tokenizer is only for save_pretrained folders"),
    ],
    ids=["empty-prompt", "unknown-characters", "beyond-softmax-context", "tokenizer-for-a-run"],
)
def test_generate_command_reports_bad_input_in_one_line(trained_lm_run, capsys, argv, message):
    from nalaformer.cli import main

    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(trained_lm_run / "run"), *argv]) == 1
    error = capsys.readouterr().err
    assert error.startswith("nalaformer generate: error:") and message in error


def test_generate_command_reads_a_save_pretrained_folder(tmp_path, capsys):
    from nalaformer.cli import main

    build(vocab_size=256).save_pretrained(tmp_path)
    argv = ["generate", "--checkpoint", str(tmp_path), "--prompt", "abc", "--max-new-tokens", "4", "--seed", "1"]
    assert main(argv) == 1
    assert "has no tokenizer/ folder; pass --tokenizer byte" in capsys.readouterr().err
    assert main([*argv, "--tokenizer", "byte"]) == 0
    assert capsys.readouterr().out.startswith("abc")


def test_eval_text_reports_the_perplexity_of_a_text_file(trained_lm_run, capsys):
    import json

    import torch.nn.functional as F

    from nalaformer.cli import main
    from nalaformer.train.generate_command import load_model_and_tokenizer

    text = "to a summer's day? Shall I compare thee\n" * 3
    (trained_lm_run / "heldout.txt").write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert main(["eval", str(trained_lm_run / "run"), "--text", str(trained_lm_run / "heldout.txt")]) == 0
    record = json.loads(capsys.readouterr().out)
    model, tokenizer = load_model_and_tokenizer(trained_lm_run / "run")
    ids = torch.tensor(tokenizer.encode(text))
    windows = (len(ids) - 1) // 16
    inputs = torch.stack([ids[i * 16 : i * 16 + 16] for i in range(windows)])
    targets = torch.stack([ids[i * 16 + 1 : i * 16 + 17] for i in range(windows)])
    with torch.no_grad():
        loss = F.cross_entropy(model(inputs).logits.flatten(0, 1), targets.flatten())
    assert record["split"] == "text" and record["samples"] == windows
    assert record["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert record["perplexity"] == pytest.approx(float(loss.exp()), rel=1e-5)
