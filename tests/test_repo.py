"""The repository's promises about itself: README's two commands, and CI running the README's test line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _fresh_clone_commands() -> list[str]:
    """The single-line commands in the first shell blocks of README.md (the fresh-machine commands)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text.split("\n## ", 2)[:2]
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", "\n## ".join(head), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("python3")]


def test_readme_gives_exactly_two_fresh_machine_commands() -> None:
    commands = _fresh_clone_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "cmdrdata-run" in demo and "examples/quickstart.py" in demo and "report" in demo
    assert "pytest" in tests


def test_ci_runs_both_readme_commands_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    for command in _fresh_clone_commands():
        assert command in ci, command
