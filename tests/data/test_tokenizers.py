"""Tokenizers: round trips, save / load, GPT-2 ids, and clear errors."""

from __future__ import annotations

import pytest
import torch

from nalaformer.data import (
    ByteTokenizer,
    CharTokenizer,
    build_tokenizer,
    encode_to_tensor,
    load_tokenizer,
)

TEXTS = ["To be, or not to be", "Ünïcödé — 東京 🙂\n\ttabs  and  spaces", "x"]


@pytest.fixture(scope="module")
def gpt2():
    # Building the 50k-merge tokenizer takes a second or more: once per module.
    return build_tokenizer("gpt2")


@pytest.mark.parametrize("kind", ["char", "byte", "gpt2"])
@pytest.mark.parametrize("text", TEXTS, ids=["ascii", "unicode", "one-char"])
def test_round_trip_and_save_load(tmp_path, request, kind, text):
    tokenizer = request.getfixturevalue("gpt2") if kind == "gpt2" else build_tokenizer(kind, text)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert torch.equal(encode_to_tensor(tokenizer, text), torch.tensor(ids, dtype=torch.int64))
    assert max(ids) < tokenizer.vocab_size
    tokenizer.save(tmp_path / "tok")
    reloaded = load_tokenizer(tmp_path / "tok")
    assert type(reloaded) is type(tokenizer) and reloaded.encode(text) == ids and reloaded.decode(ids) == text


def test_gpt2_ids_match_the_published_vocabulary(gpt2):
    tokenizer = gpt2
    assert tokenizer.vocab_size == 50257 and tokenizer.eos_token_id == 50256
    assert tokenizer.encode("Hello world") == [15496, 995]
    assert tokenizer.encode(" the") == [262]


def test_char_vocabulary_is_the_sorted_characters_of_the_text():
    tokenizer = CharTokenizer.from_text("banana!")
    assert tokenizer.vocab == ["!", "a", "b", "n"]
    assert tokenizer.encode("nab") == [3, 1, 2]
    with pytest.raises(ValueError, match=r"characters \['z'\] are not in the 4-character vocabulary"):
        tokenizer.encode("zab")
    with pytest.raises(ValueError, match="outside"):
        tokenizer.decode([4])


def test_bytes_cover_every_utf8_byte():
    tokenizer = ByteTokenizer()
    assert tokenizer.encode("é") == [0xC3, 0xA9] and tokenizer.vocab_size == 256
    assert tokenizer.decode([0xC3]) == "\ufffd"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        pytest.param(lambda: build_tokenizer("wordpiece"), ValueError, "unknown kind 'wordpiece'", id="kind"),
        pytest.param(lambda: build_tokenizer("char"), ValueError, "needs the training text", id="no-text"),
        pytest.param(lambda: load_tokenizer("/nonexistent"), FileNotFoundError, "not a saved tokenizer", id="load"),
    ],
)
def test_bad_requests_are_explained(call, error, message):
    with pytest.raises(error, match=message):
        call()
