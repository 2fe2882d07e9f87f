"""The repository's promises about itself: README's two commands, and CI running the README's test line."""

from __future__ import annotations

import ast
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


PACKAGE = ROOT / "cmdrdata_autopatch"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(ROOT)): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_no_module_or_function_outgrows_the_house_limits() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines (split it by job)")
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {size} lines")
    assert too_long == []


def _module_imports() -> dict[str, set[str]]:
    """Each package module's module-level imports of sibling modules (`from . import x` counts as x)."""
    graph: dict[str, set[str]] = {}
    for name, tree in _modules().items():
        parts = name[: -len(".py")].split("/")
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        package = parts[:-1]
        deps: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                deps.add(target)
                deps.update(f"{target}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cmdrdata_autopatch"):
                deps.add(str(node.module))
        graph[module] = deps
    return {
        m: {d for d in deps if d in graph and d not in (m, "cmdrdata_autopatch")} for m, deps in graph.items()
    }


def test_the_package_import_graph_has_no_cycles() -> None:
    graph = _module_imports()
    assert (
        "cmdrdata_autopatch.sender" in graph
        and "cmdrdata_autopatch.backlog" in graph["cmdrdata_autopatch.sender"]
    )
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
