"""Text corpora: markup stripping, the embedded Shakespeare, files and directories, streams and windows."""

from __future__ import annotations

import pytest
import torch

from nalaformer.data import (
    TokenWindows,
    load_corpus,
    load_shakespeare,
    read_text,
    shakespeare_play_paths,
    split_stream,
    strip_play_markup,
)

# "<br>" stands for the two trailing spaces of a Markdown line break.
PLAY = """# A Play

## ACT I

### SCENE I. A heath.

_Enter HAMLET and HORATIO_

**HAMLET**<br>
To be, or not to be:<br>
that is the question.

**HORATIO**<br>
__\\[Aside]_ My lord&amp;c, \\--a word.<br>
*[Reads.]*<br>
""".replace("<br>", "  ")

EXPECTED = """A Play

ACT I

SCENE I. A heath.

Enter HAMLET and HORATIO

HAMLET:
To be, or not to be:
that is the question.

HORATIO:
[Aside] My lord&c, --a word.
[Reads.]
"""


def test_strip_play_markup_gives_plain_play_text():
    assert strip_play_markup(PLAY) == EXPECTED


def test_shakespeare_has_38_plays_without_markup():
    paths = shakespeare_play_paths()
    assert len(paths) == 38 and paths == sorted(paths)
    text = load_shakespeare()
    assert 4_900_000 < len(text) < 5_100_000
    assert not set("*_#\\") & set(text)
    assert "HAMLET:\nTo be, or not to be: that is the question:" in text
    macbeth = load_shakespeare(["macbeth"])
    assert macbeth.startswith("Macbeth\n\nACT I\n") and "First Witch:\nWhen shall we three meet again" in macbeth
    assert load_corpus("shakespeare") == text
    with pytest.raises(ValueError, match="unknown plays"):
        load_shakespeare(["hamlet", "cardenio"])


def test_read_text_of_a_file_and_of_a_directory(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first ünïcode", encoding="utf-8")
    (tmp_path / ".hidden").write_text("never", encoding="utf-8")
    assert read_text(tmp_path) == "first ünïcode\nsecond"
    assert read_text(tmp_path / "b.txt") == "second"
    (tmp_path / "c.bin").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match=r"c\.bin.*not UTF-8"):
        read_text(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a file nor a directory"):
        read_text(tmp_path / "absent")


@pytest.mark.parametrize(("length", "fraction", "val"), [(100, 0.1, 10), (7, 0.0, 0), (9, 0.5, 4)], ids=str)
def test_split_stream_holds_out_the_tail(length, fraction, val):
    tokens = torch.arange(length)
    train, held_out = split_stream(tokens, fraction)
    assert len(held_out) == val and torch.equal(torch.cat([train, held_out]), tokens)


@pytest.mark.parametrize(("length", "block"), [(65, 8), (64, 8), (10, 1), (9, 8)], ids=str)
def test_token_windows_shift_targets_by_one(length, block):
    tokens = torch.arange(length) * 3
    windows = TokenWindows(tokens, block)
    assert len(windows) == (length - 1) // block
    for i in range(len(windows)):
        inputs, targets = windows[i]
        assert torch.equal(inputs, tokens[i * block : i * block + block])
        assert torch.equal(targets, tokens[i * block + 1 : i * block + block + 1])
    with pytest.raises(IndexError):
        windows[len(windows)]


def test_token_windows_reject_short_streams():
    with pytest.raises(ValueError, match="needs at least 9"):
        TokenWindows(torch.arange(8), 8)
