"""The scripts in examples/ run as written, and the README's Python snippets are exactly those scripts."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
# what each example needs beyond torch (skipped without it, as the suite does elsewhere)
NEEDS = {"language_model.py": "transformers", "convert_decoder.py": "transformers"}


def _body(path: Path) -> str:
    """The script without its one-line module docstring (the README shows the code only)."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r'"""[^\n]*"""\n\n', text)
    assert match, f"{path.name} must start with a one-line docstring and a blank line"
    return text[match.end() :].strip()


def _readme_snippets() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return [block.strip() for block in re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)]


def test_readme_python_snippets_are_the_examples() -> None:
    snippets = _readme_snippets()
    bodies = {path.name: _body(path) for path in EXAMPLES}
    assert [name for name, body in bodies.items() if body not in snippets] == []
    assert [s.splitlines()[0] for s in snippets if s not in bodies.values()] == []


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs(path: Path, tmp_path, monkeypatch, capsys) -> None:
    if path.name in NEEDS:
        pytest.importorskip(NEEDS[path.name])
    monkeypatch.chdir(tmp_path)  # the examples write runs/, diag/, checkpoints into the working directory
    runpy.run_path(str(path), run_name="__main__")
    printed = capsys.readouterr().out.strip()
    assert printed, f"{path.name} prints its result"
    if path.name == "ops_quickstart.py":
        assert printed == "True"  # the split-and-resume outputs equal one causal call
