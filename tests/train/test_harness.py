"""The lm-evaluation-harness adapter against one-sequence-at-a-time references, and a local JSONL task end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from nalaformer.cli import main
from nalaformer.train.harness import NaLaHarnessLM, evaluate_tasks


def _request(*args):
    return SimpleNamespace(args=args)


def _reference_loglikelihood(adapter, context: str, continuation: str, max_length: int) -> tuple[float, bool]:
    """One unpadded forward over the left-truncated context + continuation."""
    context_ids = adapter.tokenizer.encode(context) if context else [adapter.prefix_token_id]
    continuation_ids = adapter.tokenizer.encode(continuation)
    tokens = (context_ids + continuation_ids)[-(max_length + 1) :]
    with torch.no_grad():
        logits = adapter.model(input_ids=torch.tensor([tokens[:-1]]), use_cache=False).logits[0].float()
    log_probs = F.log_softmax(logits, dim=-1)[-len(continuation_ids) :]
    targets = torch.tensor(continuation_ids)
    return log_probs.gather(-1, targets[:, None]).sum().item(), bool((log_probs.argmax(-1) == targets).all())


@pytest.fixture(scope="module")
def adapter(trained_lm_run):
    return NaLaHarnessLM(str(trained_lm_run / "run"), batch_size=3)


PAIRS = [
    ("Shall I compare thee", " to a summer"),
    ("Shall", " I"),
    ("", "Shall"),  # empty context: conditioned on the prefix token ("\n" for this character vocabulary)
    ("to a summer's day?\nShall I compare thee to", " a summer"),  # longer than max_length: truncated on the left
    ("thee ", "to"),  # trailing white space moves to the continuation
    ("a", "a"),
]


def test_loglikelihood_equals_one_sequence_at_a_time(adapter):
    assert adapter.max_length == 16 and adapter.prefix_token_id == adapter.tokenizer.encode("\n")[0]
    results = adapter.loglikelihood([_request(*pair) for pair in PAIRS])
    assert len(results) == len(PAIRS)
    for (context, continuation), (score, greedy) in zip(PAIRS, results):
        trimmed = len(context) - len(context.rstrip())
        if trimmed:
            context, continuation = context[:-trimmed], context[-trimmed:] + continuation
        reference, reference_greedy = _reference_loglikelihood(adapter, context, continuation, adapter.max_length)
        assert score == pytest.approx(reference, rel=1e-5, abs=1e-5) and greedy == reference_greedy
        assert score < 0


def test_loglikelihood_rolling_scores_every_token_once(trained_lm_run, adapter):
    text = "Shall I compare"  # 15 characters: with the prefix token it fills the model's 16-token context
    tokens, width = len(text), 4
    short_window = NaLaHarnessLM(str(trained_lm_run / "run"), max_length=width, batch_size=2)
    # the whole text fits one window: the sum of log p(token | prefix and every earlier token)
    (whole,) = adapter.loglikelihood_rolling([_request(text)])
    reference, _ = _reference_loglikelihood(adapter, "", text, adapter.max_length)
    assert whole == pytest.approx(reference, rel=1e-5)
    # 4-token windows predict each token once, each window reading 4 tokens (the first starts at the prefix)
    (windowed,) = short_window.loglikelihood_rolling([_request(text)])
    ids = [short_window.prefix_token_id, *short_window.tokenizer.encode(text)]
    manual = 0.0
    for start in range(0, tokens, width):
        end = min(start + width, tokens)
        window, targets = ids[max(0, end - width) : end], ids[start + 1 : end + 1]
        with torch.no_grad():
            logits = short_window.model(input_ids=torch.tensor([window]), use_cache=False).logits[0].float()
        log_probs = F.log_softmax(logits, dim=-1)[-len(targets) :]
        manual += log_probs.gather(-1, torch.tensor(targets)[:, None]).sum().item()
    assert windowed == pytest.approx(manual, rel=1e-5)
    assert windowed != pytest.approx(whole, rel=1e-6)


def test_generate_until_is_greedy_decoding_cut_at_the_stop_string(adapter):
    context = "Shall I"
    (text,) = adapter.generate_until([_request(context, {"until": ["zzz"], "max_gen_toks": 6, "do_sample": False})])
    ids = adapter.tokenizer.encode(context)
    with torch.no_grad():
        for _ in range(6):
            logits = adapter.model(input_ids=torch.tensor([ids]), use_cache=False).logits
            ids.append(int(logits[0, -1].argmax()))
    expected = adapter.tokenizer.decode(ids[len(context) :])
    assert text == expected and len(text) == 6
    stop = expected[2:4]
    (cut,) = adapter.generate_until([_request(context, {"until": [stop], "max_gen_toks": 6})])
    assert cut == expected[: expected.index(stop)]
    # a softmax layer bounds the context: a long prompt keeps its last tokens and generation stops at max_length
    (bounded,) = adapter.generate_until([_request("Shall I compare thee to a summer's day?", {"max_gen_toks": 40})])
    assert len(bounded) == adapter.max_length - 1


def test_a_local_jsonl_task_scores_like_the_reference(trained_lm_run, tmp_path):
    docs = [
        {"question": "Shall I compare thee to a summer's", "choices": [" day", " year", " mess"], "answer": 0},
        {"question": "Shall I compare", "choices": [" thee", " me"], "answer": 1},
        {"question": "to a", "choices": [" summer", " sum", " she"], "answer": 2},
        {"question": "Shall", "choices": [" I", " me"], "answer": 0},
    ]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (tmp_path / "nala_local_choice.yaml").write_text(
        "\n".join(
            [
                "task: nala_local_choice",
                "dataset_path: json",
                "dataset_kwargs:",
                "  data_files:",
                f"    validation: {data}",
                "validation_split: validation",
                "output_type: multiple_choice",
                'doc_to_text: "{{question}}"',
                'doc_to_choice: "{{choices}}"',
                'doc_to_target: "{{answer}}"',
                'target_delimiter: ""',
                "metric_list:",
                "  - metric: acc",
            ]
        ),
        encoding="utf-8",
    )
    # through the command, as a user runs it; --local-only skips indexing the harness's own task catalogue
    argv = ["harness", "--checkpoint", str(trained_lm_run / "run"), "--tasks", "nala_local_choice", "--local-only"]
    argv += ["--include-path", str(tmp_path), "--batch-size", "2", "--output", str(tmp_path / "results.json")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    adapter = NaLaHarnessLM(str(trained_lm_run / "run"))
    hits = 0
    for doc in docs:
        scores = [_reference_loglikelihood(adapter, doc["question"], c, adapter.max_length)[0] for c in doc["choices"]]
        hits += int(max(range(len(scores)), key=scores.__getitem__) == doc["answer"])
    assert results["nala_local_choice"]["acc,none"] == pytest.approx(hits / len(docs))


def test_bad_input_is_named(trained_lm_run, adapter, tmp_path):
    run = str(trained_lm_run / "run")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        NaLaHarnessLM(run, batch_size=0)
    with pytest.raises(ValueError, match="exceeds this model's context of 16 tokens"):
        NaLaHarnessLM(run, max_length=64)
    with pytest.raises(ValueError, match="ema must be true or false"):
        NaLaHarnessLM(run, ema="maybe")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NaLaHarnessLM(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="encodes to no token"):
        adapter.loglikelihood([_request("Shall", "")])
    with pytest.raises(ValueError, match="a continuation of 19 tokens does not fit max_length=16"):
        adapter.loglikelihood([_request("Shall", " to a summer's day?")])
    with pytest.raises(ValueError, match="not in the"):
        adapter.loglikelihood([_request("Shall", " Ω")])
    with pytest.raises(ValueError, match="unknown harness task"):
        evaluate_tasks(run, ["no_such_task_anywhere"], include_path=tmp_path, builtin_tasks=False)
    with pytest.raises(ValueError, match="needs --include-path"):
        evaluate_tasks(run, ["x"], builtin_tasks=False)
    with pytest.raises(FileNotFoundError, match="--include-path"):
        evaluate_tasks(run, ["x"], include_path=tmp_path / "nowhere")
