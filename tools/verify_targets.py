"""Prove the version table in `cmdrdata_autopatch/targets.py` against every published `openai` wheel.

    python -m tools.verify_targets [--from 1.0.0] [--to latest] [--cache DIR] [--workers N] [--write-docs]

For every stable `openai` release in the range it downloads the wheel from PyPI (cached, sha256-checked) and,
without importing the SDK, reads the wheel's source with `zipfile` + `ast` to decide whether each table row
(`module`, `Class.method`) and its `Async` twin resolve there the way `importlib.import_module(module)` +
`getattr(module, Class)` + the method in the class body would at run time. A row must resolve on exactly
the releases its range claims: resolving before `first` or after `last`, missing inside the range, or the
sync and async twins disagreeing are all findings. Any finding makes the exit status 1.

Why static: importing ~400 SDK releases would need ~400 environments (their dependency floors differ, 3.x
needs httpx2, 2.49+ needs Python 3.10); parsing the wheels needs none and takes seconds once they are cached.

Why this is not part of the normal test run: it downloads ~400 wheels (~350 MB). It runs on demand
(`nox -s verify-targets`) and on a schedule; `--write-docs` regenerates `docs/compatibility.md`.

How a class is found (mirroring what the real wheels do):
  * the module is `openai/x/y/__init__.py` (a package; it wins over a same-named `y.py`, as in Python)
    or `openai/x/y.py`;
  * the class is a top-level `class` statement there, or a name bound by `from .sub import Class` (1.63.0+
    re-exports the chat `Completions` from `.completions`), or `from .sub import *`, or `Alias = Name`,
    followed recursively;
  * from 3.16.1, packages export lazily: the imports sit under `if TYPE_CHECKING:` (never executed, so they
    do not count) and the `else:` branch defines a module-level `__getattr__` that looks the name up in a
    dict literal such as `_EXPORTS = {"Completions": (".completions", "Completions")}` and imports it with
    `importlib.import_module(module_name, __name__)`; such a dict, when `__getattr__` reads it, counts;
  * the method is a `def`/`async def` (or an assignment) directly in the class body. From 3.38.0 the
    helpers are one-line delegates, still defined in the body, so they count. Inherited methods do not:
    the table promises the method is defined on that class.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import hashlib
import io
import json
import os
import re
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional, Union
from urllib.parse import urljoin

from cmdrdata_autopatch.targets import TARGETS, VERIFIED_UP_TO, Target, parse_version

PYPI_JSON = "https://pypi.org/pypi/openai/json"
DEFAULT_CACHE = Path.home() / ".cache" / "cmdrdata-autopatch" / "wheels"
DEFAULT_DOCS = Path(__file__).resolve().parent.parent / "docs" / "compatibility.md"
_STABLE = re.compile(r"^\d+\.\d+\.\d+$")
_MAX_DEPTH = 12  # re-export chains in the real wheels are at most 2 deep; this only stops cycles


# --------------------------------------------------------------------------------------------------------
# Releases and wheels (the only part that touches the network)


@dataclass(frozen=True)
class Release:
    """One published `openai` version and its pure-Python wheel."""

    version: str
    filename: str
    url: str
    sha256: str
    size: int


def releases_from_index(index: Mapping[str, object], base_url: str = PYPI_JSON) -> list[Release]:
    """The stable releases that ship a wheel, oldest first, from PyPI's JSON document.

    Pre-releases (1.0.0b1 ... 1.0.0rc3) are skipped: nobody pins them and `parse_version` folds them onto
    1.0.0. Releases without a wheel (all of 0.x) cannot be checked and predate the table anyway.
    """
    out: list[Release] = []
    releases = index.get("releases", {})
    assert isinstance(releases, dict)
    for version, files in releases.items():
        if not _STABLE.match(version):
            continue
        for f in files:
            if f.get("packagetype") == "bdist_wheel" and not f.get("yanked", False):
                out.append(
                    Release(
                        version=version,
                        filename=f["filename"],
                        url=urljoin(base_url, f["url"]),  # the index may serve relative URLs
                        sha256=f["digests"]["sha256"],
                        size=int(f.get("size", 0)),
                    )
                )
                break
    out.sort(key=lambda r: parse_version(r.version))
    return out


def fetch_index(url: str = PYPI_JSON, timeout: float = 60.0) -> dict[str, object]:
    """PyPI's JSON document for `openai` (stdlib only, so the tool runs on any interpreter)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: dict[str, object] = json.load(resp)
        return data


def select_range(releases: Sequence[Release], first: str, last: str) -> list[Release]:
    """Releases between `first` and `last` inclusive; `last="latest"` means no upper bound."""
    lo = parse_version(first)
    hi = None if last == "latest" else parse_version(last)
    return [
        r
        for r in releases
        if parse_version(r.version) >= lo and (hi is None or parse_version(r.version) <= hi)
    ]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_wheel(release: Release, cache: Path, timeout: float = 120.0, retries: int = 3) -> Path:
    """The cached wheel for `release`, downloading it first if absent or corrupt.

    Written to a temporary name and renamed, so an interrupted run never leaves a truncated wheel that a
    later run would trust.
    """
    path = cache / release.filename
    if path.exists() and _sha256(path) == release.sha256:
        return path
    last_error: Optional[Exception] = None
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(release.url, timeout=timeout) as resp:
                data = resp.read()
            if hashlib.sha256(data).hexdigest() != release.sha256:
                raise OSError(f"sha256 mismatch for {release.filename}")
            tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return path
        except OSError as exc:  # URLError and timeouts are OSErrors
            last_error = exc
            time.sleep(1.0 + attempt)
    raise RuntimeError(f"could not download {release.filename}: {last_error}")


def download_all(releases: Sequence[Release], cache: Path, workers: int = 8) -> dict[str, Path]:
    """Download (or reuse) every wheel, `workers` at a time. Returns version -> wheel path."""
    cache.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        paths = list(pool.map(lambda r: download_wheel(r, cache), releases))
    return {r.version: p for r, p in zip(releases, paths)}


# --------------------------------------------------------------------------------------------------------
# Static resolution (pure: a zip in, findings out; unit-tested on synthetic wheels)


class WheelSource:
    """Read-only view of the `.py` files in a wheel, with parsed modules cached per path."""

    def __init__(self, wheel: Union[str, Path, IO[bytes]]) -> None:
        with zipfile.ZipFile(wheel) as zf:
            self._files = {n: zf.read(n) for n in zf.namelist() if n.endswith(".py")}
        self._trees: dict[str, Optional[ast.Module]] = {}
        self._import_problems: dict[str, list[str]] = {}
        self._summaries: dict[str, ModuleSummary] = {}
        self._direct: dict[str, tuple[list[str], list[str]]] = {}
        self._dirs = {name.rpartition("/")[0] + "/" for name in self._files}

    @classmethod
    def from_sources(cls, sources: Mapping[str, str]) -> WheelSource:
        """A wheel built in memory from `{"openai/x.py": "source"}`: how the tests make synthetic wheels."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, text in sources.items():
                zf.writestr(name, text)
        buf.seek(0)
        return cls(buf)

    def has(self, path: str) -> bool:
        return path in self._files

    def has_dir(self, folder: str) -> bool:
        """True when `folder` ("openai/lib/") directly holds a `.py` file."""
        return folder in self._dirs

    def tree(self, path: str) -> Optional[ast.Module]:
        """The parsed module, or None if the file is absent.

        A file that does not parse raises `SyntaxError` (typically a newer syntax than this interpreter
        knows): it must surface as a finding, never read as "the module is absent".
        """
        if path not in self._trees:
            raw = self._files.get(path)
            self._trees[path] = None if raw is None else ast.parse(raw, filename=path)
        return self._trees[path]

    def summary(self, path: str, module: str) -> ModuleSummary:
        """Names bound and internal imports of one file, cached by content across wheels (most files
        are identical between neighbouring releases, so a full run parses each distinct file once per
        worker)."""
        mine = self._summaries.get(path)
        if mine is not None:
            return mine
        raw = self._files[path]
        key = (path, hashlib.blake2b(raw, digest_size=16).digest())
        hit = _SUMMARIES.get(key)
        if hit is None:
            tree = ast.parse(raw, filename=path)
            hit = _SUMMARIES[key] = summarize(tree, module, path)
        self._summaries[path] = hit
        return hit


def module_file(src: WheelSource, module: str) -> Optional[str]:
    """The file that `import module` would load: the package `__init__.py` wins over `name.py`."""
    base = module.replace(".", "/")
    for path in (f"{base}/__init__.py", f"{base}.py"):
        if src.has(path):
            return path
    return None


def is_namespace_package(src: WheelSource, module: str) -> bool:
    """A folder of modules without `__init__.py` (openai 1.0.0's `openai/lib`): importable, binds nothing."""
    return module_file(src, module) is None and src.has_dir(module.replace(".", "/") + "/")


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:` / `if _t.TYPE_CHECKING:`."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def runtime_statements(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """Top-level statements that may execute at import time.

    `if TYPE_CHECKING:` bodies never run (only their `else:` does), which is exactly how the lazy 3.16.1+
    packages hide their imports; other `if`/`try` blocks might run, so both branches are included.
    """
    for stmt in body:
        if isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from runtime_statements(stmt.body)
            yield from runtime_statements(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from runtime_statements(stmt.body)
            for handler in stmt.handlers:
                yield from runtime_statements(handler.body)
            yield from runtime_statements(stmt.orelse)
            yield from runtime_statements(stmt.finalbody)
        else:
            yield stmt


def _anchor(module: str, path: str) -> str:
    """The package that `from .x import` is relative to: the module itself if it is a package."""
    return module if path.endswith("/__init__.py") else module.rpartition(".")[0]


def _absolute(name: str, level: int, anchor: str) -> str:
    """Resolve a relative import (`level` dots) against `anchor`, as `importlib` does."""
    if level == 0:
        return name
    base = anchor
    for _ in range(level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{name}" if name else base


def _lazy_exports(stmts: Sequence[ast.stmt]) -> dict[str, tuple[str, str]]:
    """`{"Name": (".module", "Symbol")}` tables read by a module-level `__getattr__` (3.16.1+)."""
    getattr_fn = next((s for s in stmts if isinstance(s, ast.FunctionDef) and s.name == "__getattr__"), None)
    if getattr_fn is None:
        return {}
    used = {n.id for n in ast.walk(getattr_fn) if isinstance(n, ast.Name)}
    table: dict[str, tuple[str, str]] = {}
    for stmt in stmts:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        if not isinstance(value, ast.Dict) or not any(
            isinstance(t, ast.Name) and t.id in used for t in targets
        ):
            continue
        for k, v in zip(value.keys, value.values):
            if (
                isinstance(k, ast.Constant)
                and isinstance(k.value, str)
                and isinstance(v, ast.Tuple)
                and len(v.elts) == 2
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in v.elts)
            ):
                mod, sym = (e.value for e in v.elts)  # type: ignore[attr-defined]
                table[k.value] = (mod, sym)
    return table


@dataclass(frozen=True)
class ModuleSummary:
    """What importing one module binds and imports (internal `openai` imports only).

    `open_names` is True when any name may exist (a module-level `__getattr__`, or a star import from
    outside `openai`), so missing names are never claimed there.
    """

    names: frozenset[str]
    star_from: tuple[str, ...]  # internal modules star-imported
    imports: tuple[tuple[str, tuple[str, ...]], ...]  # (module, names imported from it; () for `import m`)
    open_names: bool


_SUMMARIES: dict[tuple[str, bytes], ModuleSummary] = {}


def _guarded(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """Like `runtime_statements`, but without `try:` bodies that have handlers: an import failing there is
    caught (`try: import x except ImportError`), so it cannot break the import of the module."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from _guarded(stmt.body)
            yield from _guarded(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            if not stmt.handlers:
                yield from _guarded(stmt.body)
            yield from _guarded(stmt.orelse)
            yield from _guarded(stmt.finalbody)
        else:
            yield stmt


def summarize(tree: ast.Module, module: str, path: str) -> ModuleSummary:
    """Bindings and checked imports of one module (see `ModuleSummary`)."""
    names: set[str] = set()
    star_from: list[str] = []
    open_names = False
    anchor = _anchor(module, path)
    for stmt in runtime_statements(tree.body):
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(stmt.name)
            open_names |= stmt.name == "__getattr__"
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
        elif isinstance(stmt, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            source = _absolute(stmt.module or "", stmt.level, anchor)
            for a in stmt.names:
                if a.name != "*":
                    names.add(a.asname or a.name)
                elif source.split(".")[0] == "openai":
                    star_from.append(source)
                else:
                    open_names = True
        elif isinstance(stmt, ast.Global):
            open_names = True
    imports: list[tuple[str, tuple[str, ...]]] = []
    for stmt in _guarded(tree.body):
        if isinstance(stmt, ast.ImportFrom):
            source = _absolute(stmt.module or "", stmt.level, anchor)
            if source.split(".")[0] == "openai":
                imports.append((source, tuple(a.name for a in stmt.names if a.name != "*")))
        elif isinstance(stmt, ast.Import):
            imports.extend((a.name, ()) for a in stmt.names if a.name.split(".")[0] == "openai")
    return ModuleSummary(frozenset(names), tuple(star_from), tuple(imports), open_names)


def _binds(src: WheelSource, module: str, name: str, _seen: Optional[set[str]] = None) -> bool:
    """Would `from module import name` succeed, as far as the wheel's source shows?"""
    if module_file(src, f"{module}.{name}") is not None:  # a submodule is importable by name
        return True
    path = module_file(src, module)
    if path is None:
        return False
    summary = src.summary(path, module)
    if summary.open_names or name in summary.names:
        return True
    seen = _seen if _seen is not None else set()
    seen.add(module)
    return any(_binds(src, m, name, seen) for m in summary.star_from if m not in seen)


def import_problems(src: WheelSource, module: str) -> list[str]:
    """Why `import module` would raise ImportError, found by following its internal imports transitively.

    Needed because a module, class and method can all be present while the module still cannot be
    imported: openai 1.99.0's `resources/responses/responses.py` reaches `lib/streaming/responses/_events.py`,
    which imports `ResponseReasoningSummaryDoneEvent` from `types.responses`, where that release lacks it.
    Only imports inside `openai` are followed (third-party dependencies are the installer's business).
    """
    if module in src._import_problems:
        return src._import_problems[module]
    problems: list[str] = []
    seen: set[str] = set()
    queue: list[str] = []

    def enqueue(name: str) -> None:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            mod = ".".join(parts[:i])
            if mod not in seen:
                seen.add(mod)
                queue.append(mod)

    enqueue(module)
    while queue:
        edges, own = _direct_imports(src, queue.pop())
        problems.extend(own)
        for edge in edges:
            enqueue(edge)
    src._import_problems[module] = problems
    return problems


def _direct_imports(src: WheelSource, module: str) -> tuple[list[str], list[str]]:
    """The internal modules one module imports, and its own failing imports (memoized per wheel: every row
    walks much the same graph)."""
    cached = src._direct.get(module)
    if cached is not None:
        return cached
    edges: list[str] = []
    problems: list[str] = []
    path = module_file(src, module)
    if path is not None:  # a missing module is reported by whoever imports it (or is the row's "no module")
        for source, names in src.summary(path, module).imports:
            if module_file(src, source) is None and not is_namespace_package(src, source):
                problems.append(f"{module} imports missing module {source}")
                continue
            edges.append(source)
            for name in names:
                if module_file(src, f"{source}.{name}") is not None:
                    edges.append(f"{source}.{name}")
                elif not _binds(src, source, name):
                    problems.append(f"{module}: cannot import {name!r} from {source}")
    src._direct[module] = (edges, problems)
    return edges, problems


@dataclass(frozen=True)
class ClassLocation:
    """Where a class name resolved to: the defining module's file and its `class` statement."""

    path: str
    node: ast.ClassDef
    via: tuple[str, ...] = ()  # the re-export hops, e.g. ("openai/.../__init__.py lazy",)


def find_class(src: WheelSource, module: str, name: str, _depth: int = 0) -> Optional[ClassLocation]:
    """Resolve `getattr(import_module(module), name)` to a class statement, statically.

    The last binding of `name` at import time wins, as in Python; a lazy `__getattr__` table is consulted
    only when no ordinary binding exists (that is when Python calls `__getattr__`).
    """
    if _depth > _MAX_DEPTH:
        return None
    path = module_file(src, module)
    tree = src.tree(path) if path else None
    if path is None or tree is None:
        return None
    stmts = list(runtime_statements(tree.body))
    anchor = _anchor(module, path)
    found: Optional[ClassLocation] = None
    for stmt in stmts:
        if isinstance(stmt, ast.ClassDef) and stmt.name == name:
            found = ClassLocation(path, stmt)
        elif isinstance(stmt, ast.ImportFrom):
            source = _absolute(stmt.module or "", stmt.level, anchor)
            for alias in stmt.names:
                if alias.name == "*":
                    hit = find_class(src, source, name, _depth + 1)
                    if hit is not None:
                        found = ClassLocation(hit.path, hit.node, (f"{path} *", *hit.via))
                elif (alias.asname or alias.name) == name:
                    hit = find_class(src, source, alias.name, _depth + 1)
                    found = None if hit is None else ClassLocation(hit.path, hit.node, (path, *hit.via))
        elif (
            isinstance(stmt, ast.Assign)
            and isinstance(stmt.value, ast.Name)
            and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets)
        ):  # `Name = Other`: follow the alias within the module
            other = stmt.value.id
            found = find_class(src, module, other, _depth + 1) if other != name else None
    if found is not None:
        return found
    lazy = _lazy_exports(stmts)
    if name in lazy:
        rel, symbol = lazy[name]
        level = len(rel) - len(rel.lstrip("."))
        # `importlib.import_module(".sub", __name__)`: relative to the module's own name
        target = _absolute(rel.lstrip("."), level, module)
        hit = find_class(src, target, symbol, _depth + 1)
        if hit is not None:
            return ClassLocation(hit.path, hit.node, (f"{path} lazy", *hit.via))
    return None


def defines_method(node: ast.ClassDef, method: str) -> bool:
    """True when the class body itself defines `method` (def, async def, or an assignment)."""
    for stmt in runtime_statements(node.body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == method:
            return True
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == method for t in stmt.targets
        ):
            return True
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == method:
            return stmt.value is not None
    return False


@dataclass(frozen=True)
class Resolution:
    """Whether one `module:Class.method` resolves in one wheel, and if not, the first thing missing."""

    ok: bool
    reason: str  # "" when ok; "no module" / "no class" / "no method"
    where: str = ""  # the file defining the class, when found


def resolve(src: WheelSource, module: str, attr: str) -> Resolution:
    """Statically answer: would `getattr(getattr(import_module(module), Class), method)` find a method
    defined on that class?"""
    class_name, _, method = attr.partition(".")
    if module_file(src, module) is None:
        return Resolution(False, "no module")
    try:
        loc = find_class(src, module, class_name)
    except SyntaxError as exc:
        return Resolution(False, f"unparseable {exc.filename}:{exc.lineno} (run on a newer Python)")
    if loc is None:
        return Resolution(False, "no class")
    if not defines_method(loc.node, method):
        return Resolution(False, "no method", loc.path)
    try:
        problems = import_problems(src, module)
    except SyntaxError as exc:
        return Resolution(False, f"unparseable {exc.filename}:{exc.lineno} (run on a newer Python)")
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return Resolution(False, f"import fails: {problems[0]}{more}", loc.path)
    return Resolution(True, "", loc.path)


@dataclass(frozen=True)
class Observation:
    """One row on one release: the sync class and its `Async` twin."""

    sync: Resolution
    async_: Resolution

    @property
    def state(self) -> str:
        """One of "both", "none", "sync only", "async only"."""
        if self.sync.ok and self.async_.ok:
            return "both"
        if not self.sync.ok and not self.async_.ok:
            return "none"
        return "sync only" if self.sync.ok else "async only"


def session_hooks(t: Target) -> list[tuple[str, str]]:
    """For a `kind="connect"` row, the (sync, async) methods `sessions.py` hooks besides `connect`: the
    connection's `parse_event` (every reading style goes through it) and the manager's entry points.
    (`close` is not listed: from 3.32.0 it is inherited from the SDK's base class, and hooked there.)"""
    if getattr(t, "kind", "call") != "connect":
        return []
    p = t.class_name
    return [
        (f"{p}Connection.parse_event", f"Async{p}Connection.parse_event"),
        (f"{p}ConnectionManager.__enter__", f"Async{p}ConnectionManager.__aenter__"),
        (f"{p}ConnectionManager.enter", f"Async{p}ConnectionManager.enter"),
    ]


def _resolve_all(src: WheelSource, module: str, attrs: Sequence[str]) -> Resolution:
    """The first of `attrs` that does not resolve (its reason names it), else the first resolution."""
    first = resolve(src, module, attrs[0])
    if not first.ok:
        return first
    for attr in attrs[1:]:
        found = resolve(src, module, attr)
        if not found.ok:
            return Resolution(False, f"{found.reason}: {attr}", found.where)
    return first


def check_source(src: WheelSource, targets: Sequence[Target]) -> dict[str, Observation]:
    """Observe every row in one wheel. Keyed by `Target.key`. A `connect` row resolves only where the
    connection classes `sessions.py` hooks resolve too."""
    out = {}
    for t in targets:
        hooks = session_hooks(t)
        sync = _resolve_all(src, t.module, [t.attr, *(h[0] for h in hooks)])
        async_ = _resolve_all(src, t.module, [t.async_attr, *(h[1] for h in hooks)])
        out[t.key] = Observation(sync, async_)
    return out


def check_wheel(
    wheel: Union[str, Path, IO[bytes]], targets: Sequence[Target] = TARGETS
) -> dict[str, Observation]:
    """Observe every row in one wheel file."""
    return check_source(WheelSource(wheel), targets)


def _check_wheel_path(path: str) -> dict[str, Observation]:
    """Process-pool entry point (top-level so it pickles)."""
    return check_wheel(path, TARGETS)


# --------------------------------------------------------------------------------------------------------
# Comparing observations with the claimed ranges


def contiguous_runs(versions: Sequence[str], selected: Iterable[str]) -> list[tuple[str, str]]:
    """Group `selected` into runs of consecutive entries of the ordered `versions`: [(first, last), ...]."""
    chosen = set(selected)
    runs: list[tuple[str, str]] = []
    start: Optional[str] = None
    prev: Optional[str] = None
    for v in versions:
        if v in chosen:
            if start is None:
                start = v
            prev = v
        elif start is not None and prev is not None:
            runs.append((start, prev))
            start = None
    if start is not None and prev is not None:
        runs.append((start, prev))
    return runs


def format_runs(runs: Sequence[tuple[str, str]]) -> str:
    """`[("1.0.0", "1.7.1"), ("2.0.0", "2.0.0")]` -> "1.0.0-1.7.1, 2.0.0"; "none" when empty."""
    if not runs:
        return "none"
    return ", ".join(a if a == b else f"{a}-{b}" for a, b in runs)


def claimed_range(t: Target) -> str:
    """The row's range as the table states it."""
    return f"{t.first}-{t.last if t.last is not None else 'current'}"


@dataclass
class RowReport:
    """The verdict for one row over all checked releases."""

    target: Target
    checked: int
    claimed: list[tuple[str, str]]  # claimed range clipped to the checked releases
    observed: list[tuple[str, str]]  # releases where both twins resolve
    resolved: int = 0  # how many checked releases that is
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # known-broken releases, excused

    @property
    def ok(self) -> bool:
        return not self.findings


# Releases of the SDK itself that are broken for a row: the module is there but raises ImportError, so
# `client.<resource>` fails for every user of that release and there is nothing to bill. A table range cannot
# have a hole, and the patcher already skips a target whose import fails, so these are notes, not findings;
# they apply only while the row really does fail to import there.
KNOWN_BROKEN: dict[tuple[str, str], str] = {
    (
        "1.99.0",
        "openai.resources.responses.responses",
    ): "openai 1.99.0 itself cannot import its responses module (fixed in 1.99.1)",
}


def compare(
    targets: Sequence[Target],
    observations: Mapping[str, Mapping[str, Observation]],
    known_broken: Mapping[tuple[str, str], str] = KNOWN_BROKEN,
) -> list[RowReport]:
    """Check each row's claimed range against what was observed on each release.

    `observations` maps version -> row key -> Observation. A row must have both twins on every release it
    claims and neither on any other. Findings are grouped into version runs so a report stays readable.
    """
    versions = sorted(observations, key=parse_version)
    reports: list[RowReport] = []
    for t in targets:
        claimed = [v for v in versions if t.covers(v)]
        both = [v for v in versions if observations[v][t.key].state == "both"]
        report = RowReport(
            t, len(versions), contiguous_runs(versions, claimed), contiguous_runs(versions, both), len(both)
        )
        problems: dict[str, list[str]] = {}
        for v in versions:
            obs = observations[v][t.key]
            expected = "both" if t.covers(v) else "none"
            if obs.state == expected:
                continue
            broken = known_broken.get((v, t.module))
            if broken and obs.state == "none" and obs.sync.reason.startswith("import fails"):
                report.notes.append(f"{v}: {broken} ({obs.sync.reason})")
                continue
            if expected == "both" and obs.state == "none":
                label = f"missing inside the claimed range ({obs.sync.reason})"
            elif expected == "none" and obs.state == "both":
                label = "resolves outside the claimed range"
            else:
                missing = obs.async_ if obs.sync.ok else obs.sync
                twin = t.async_attr if obs.sync.ok else t.attr
                label = f"{obs.state}: {twin} {missing.reason}"
                if expected == "none":
                    label += " (outside the claimed range)"
            problems.setdefault(label, []).append(v)
        for label, vs in problems.items():
            report.findings.append(f"{label}: {format_runs(contiguous_runs(versions, vs))}")
        reports.append(report)
    return reports


# --------------------------------------------------------------------------------------------------------
# Output


def summary_lines(reports: Sequence[RowReport]) -> list[str]:
    """The per-row console summary."""
    width = max((len(r.target.key) for r in reports), default=0)
    lines = []
    for r in reports:
        verdict = "OK      " if r.ok else "MISMATCH"
        lines.append(
            f"{verdict} {r.target.key:<{width}}  claimed {claimed_range(r.target):<18} "
            f"observed {format_runs(r.observed)}"
        )
        lines.extend(f"         - {f}" for f in r.findings)
        lines.extend(f"         note: {n}" for n in r.notes)
    return lines


def render_markdown(
    reports: Sequence[RowReport],
    versions: Sequence[str],
    today: _dt.date,
    elapsed: Optional[float] = None,
    download: Optional[float] = None,
) -> str:
    """docs/compatibility.md: generated, never edited by hand."""
    newest = versions[-1] if versions else "n/a"
    oldest = versions[0] if versions else "n/a"
    mismatches = sum(not r.ok for r in reports)
    out = [
        "# Compatibility: the patch-target table against every `openai` release",
        "",
        "<!-- Generated by `python -m tools.verify_targets --write-docs`. Do not edit by hand. -->",
        "",
        f"* Generated: {today.isoformat()}",
        f"* Releases checked: {len(versions)} (every stable release with a wheel from {oldest} to {newest})",
        f"* Newest release checked: **{newest}**",
        f"* Table `VERIFIED_UP_TO`: {VERIFIED_UP_TO}",
        f"* Rows: {len(reports)}; mismatches: **{mismatches}**",
    ]
    if elapsed is not None:
        fetched = f" (of which {download:.0f} s listing and fetching wheels)" if download is not None else ""
        out.append(f"* Run time: {elapsed:.0f} s{fetched}")
    out += [
        "",
        "Each row is checked statically (zipfile + ast, no import) on every release: the module exists,",
        "the class is defined there or re-exported (plain import, or the lazy `__getattr__` table of",
        "3.16.1+), the method is defined in the class body, and every import inside `openai` that",
        "importing the module runs (transitively) names something that exists, for both the sync class",
        "and its `Async` twin. *Observed* lists the releases where both resolve; a row passes when that is",
        "exactly its claimed range.",
        "",
        "| row | api | claimed range | observed range (releases resolving) | versions checked | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        t = r.target
        result = "OK" if r.ok else "MISMATCH: " + "; ".join(r.findings)
        if r.notes:
            result += " (known broken SDK release: " + ", ".join(n.split(":")[0] for n in r.notes) + ")"
        resolved = f"{r.resolved} releases"
        out.append(
            f"| `{t.module}` : `{t.attr}` / `{t.async_attr}` | {t.api} | {claimed_range(t)} | "
            f"{format_runs(r.observed)} ({resolved}) | {r.checked} | {result} |"
        )
    notes = sorted({n for r in reports for n in r.notes})
    if notes:
        out += ["", "Known broken SDK releases (excused, the patcher skips a target whose import fails):", ""]
        out += [f"* {n}" for n in notes]
    out += [
        "",
        "`current` means still present in the newest release checked. The verifier downloads every",
        "wheel, so it is not part of the normal test run: it runs on demand and on a schedule",
        "(`nox -s verify-targets`).",
        "",
    ]
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.verify_targets", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--from", dest="first", default="1.0.0", help="oldest release to check (default 1.0.0)"
    )
    parser.add_argument(
        "--to", dest="last", default="latest", help="newest release to check (default latest)"
    )
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help=f"wheel cache (default {DEFAULT_CACHE})"
    )
    parser.add_argument("--workers", type=int, default=8, help="concurrent downloads (default 8)")
    parser.add_argument("--write-docs", action="store_true", help="write docs/compatibility.md")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help=argparse.SUPPRESS)
    parser.add_argument("--index-url", default=PYPI_JSON, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    started = time.monotonic()
    releases = select_range(
        releases_from_index(fetch_index(args.index_url), args.index_url), args.first, args.last
    )
    if not releases:
        print(f"no openai release between {args.first} and {args.last}", file=sys.stderr)
        return 2
    print(f"checking {len(releases)} releases: {releases[0].version} .. {releases[-1].version}", flush=True)
    paths = download_all(releases, args.cache, args.workers)
    downloaded = time.monotonic()
    print(f"wheels ready in {downloaded - started:.1f} s (cache {args.cache})", flush=True)

    versions = [r.version for r in releases]
    workers = os.cpu_count() or 1
    # contiguous blocks per worker: neighbouring releases share most files; summaries are cached by content
    chunk = max(1, -(-len(versions) // workers))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_check_wheel_path, [str(paths[v]) for v in versions], chunksize=chunk))
    observations = dict(zip(versions, results))
    reports = compare(TARGETS, observations)
    elapsed = time.monotonic() - started
    print("\n".join(summary_lines(reports)))
    bad = sum(not r.ok for r in reports)
    print(
        f"\n{len(reports)} rows x {len(versions)} releases: {bad} mismatching rows; "
        f"analysis {elapsed - (downloaded - started):.1f} s, total {elapsed:.1f} s"
    )
    if parse_version(versions[-1]) != parse_version(VERIFIED_UP_TO):
        print(f"note: newest release checked is {versions[-1]}; targets.VERIFIED_UP_TO is {VERIFIED_UP_TO}")
    if args.write_docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        text = render_markdown(reports, versions, _dt.date.today(), elapsed, downloaded - started)
        args.docs.write_text(text, encoding="utf-8")
        print(f"wrote {args.docs}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
