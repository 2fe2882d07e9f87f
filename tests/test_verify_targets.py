"""The verifier's pure resolution logic (`tools/verify_targets.py`), on synthetic wheels.

Nothing here downloads: the wheels are zip files built in memory from source strings, shaped like the real
`openai` layouts (a module file, a package re-exporting from a submodule, the lazy `__getattr__` packages of
3.16.1+). The full run over every real release is `python -m tools.verify_targets`; the table itself is
tested in `test_targets.py`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from cmdrdata_autopatch.targets import TARGETS, Target

# `tools/` is a repo-level folder, not part of the installed package: make it importable from a checkout.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tools import verify_targets as vt  # noqa: E402

R = "openai.resources."
EDITS = R + "edits:Edits.create"


# ---------------------------------------------------------------------------------------------------------
# The verifier's static resolution, on synthetic wheels


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def pair(cls: str, *methods: str) -> str:
    """A sync class and its Async twin, both defining `methods` (the async ones as coroutines)."""
    body = "".join(f"    def {m}(self, *, model: str) -> None: ...\n" for m in methods) or "    pass\n"
    abody = "".join(f"    async def {m}(self, *, model: str) -> None: ...\n" for m in methods) or "    pass\n"
    return f"class {cls}:\n{body}\nclass Async{cls}:\n{abody}"


BASE = {"openai/__init__.py": "", "openai/resources/__init__.py": ""}

LAZY_INIT = dedent(
    """
    import typing as _t

    if _t.TYPE_CHECKING:
        from .completions import Completions as Completions, AsyncCompletions as AsyncCompletions
    else:
        _EXPORTS = {
            "Completions": (".completions", "Completions"),
            "AsyncCompletions": (".completions", "AsyncCompletions"),
        }
        _SUBMODULES = {"completions"}

        def __getattr__(name: str) -> _t.Any:
            import importlib

            if name in _EXPORTS:
                module_name, symbol_name = _EXPORTS[name]
                value = getattr(importlib.import_module(module_name, __name__), symbol_name)
            elif name in _SUBMODULES:
                value = importlib.import_module(f".{name}", __name__)
            else:
                raise AttributeError(name)
            globals()[name] = value
            return value

    __all__ = ["Completions", "AsyncCompletions"]
    """
)


def wheel(**files: str) -> vt.WheelSource:
    """`wheel(**{"openai/resources/x.py": src})`: an in-memory wheel with the openai package skeleton."""
    return vt.WheelSource.from_sources({**BASE, **files})


def test_module_file() -> None:
    src = wheel(**{"openai/resources/edits.py": pair("Edits", "create")})
    res = vt.resolve(src, R + "edits", "Edits.create")
    assert res.ok and res.where == "openai/resources/edits.py"
    assert vt.resolve(src, R + "edits", "AsyncEdits.create").ok


def test_missing_module() -> None:
    src = wheel()
    assert vt.resolve(src, R + "edits", "Edits.create") == vt.Resolution(False, "no module")


def test_package_re_exports_from_submodule() -> None:
    # 1.63.0+: chat/completions.py became a package whose __init__ re-exports the class.
    src = wheel(
        **{
            "openai/resources/chat/__init__.py": "from .completions import Completions, AsyncCompletions\n",
            "openai/resources/chat/completions/__init__.py": (
                "from .completions import (\n    Completions,\n    AsyncCompletions,\n)\n"
                "from .messages import Messages\n"
            ),
            "openai/resources/chat/completions/completions.py": pair("Completions", "create", "parse"),
            "openai/resources/chat/completions/messages.py": pair("Messages", "list"),
        }
    )
    for module in (R + "chat.completions", R + "chat.completions.completions", R + "chat"):
        res = vt.resolve(src, module, "Completions.parse")
        assert res.ok, module
        assert res.where == "openai/resources/chat/completions/completions.py"


def test_package_wins_over_module_file() -> None:
    # Python imports the package when both `x/__init__.py` and `x.py` exist; so must the verifier.
    src = wheel(
        **{
            "openai/resources/edits.py": pair("Edits", "create"),
            "openai/resources/edits/__init__.py": "",
        }
    )
    assert vt.resolve(src, R + "edits", "Edits.create") == vt.Resolution(False, "no class")


def test_aliased_and_star_re_exports() -> None:
    src = wheel(
        **{
            "openai/resources/a/__init__.py": "from .impl import _Edits as Edits, AsyncEdits\n",
            "openai/resources/a/impl.py": pair("Edits", "create").replace("class Edits", "class _Edits"),
            "openai/resources/b/__init__.py": "from .impl import *\n",
            "openai/resources/b/impl.py": pair("Edits", "create"),
            "openai/resources/c.py": "from .b import Edits as _E\nEdits = _E\n",
        }
    )
    assert vt.resolve(src, R + "a", "Edits.create").ok
    assert vt.resolve(src, R + "b", "AsyncEdits.create").ok
    assert vt.resolve(src, R + "c", "Edits.create").ok


def test_lazy_getattr_export() -> None:
    # 3.16.1+: imports only under TYPE_CHECKING; the runtime path is __getattr__ + the _EXPORTS table.
    src = wheel(
        **{
            "openai/resources/chat/__init__.py": "",
            "openai/resources/chat/completions/__init__.py": LAZY_INIT,
            "openai/resources/chat/completions/completions.py": pair("Completions", "create"),
        }
    )
    res = vt.resolve(src, R + "chat.completions", "AsyncCompletions.create")
    assert res.ok and res.where.endswith("completions/completions.py")


def test_type_checking_import_alone_does_not_resolve() -> None:
    # Without the lazy table, a TYPE_CHECKING-only import binds nothing at run time.
    init = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .impl import Edits\n"
    src = wheel(
        **{
            "openai/resources/edits/__init__.py": init,
            "openai/resources/edits/impl.py": pair("Edits", "create"),
        }
    )
    assert vt.resolve(src, R + "edits", "Edits.create").reason == "no class"


def test_lazy_table_without_getattr_does_not_resolve() -> None:
    init = LAZY_INIT.replace("def __getattr__", "def _not_getattr")
    src = wheel(
        **{
            "openai/resources/chat/completions/__init__.py": init,
            "openai/resources/chat/completions/completions.py": pair("Completions", "create"),
        }
    )
    assert vt.resolve(src, R + "chat.completions", "Completions.create").reason == "no class"


def test_method_missing() -> None:
    src = wheel(**{"openai/resources/images.py": pair("Images", "generate")})
    res = vt.resolve(src, R + "images", "Images.edit")
    assert res == vt.Resolution(False, "no method", "openai/resources/images.py")


def test_one_line_delegate_and_overloads_count_as_defined() -> None:
    # 3.38.0+: helpers are one-line delegates; overloaded methods have several defs. Both are defined.
    body = dedent(
        """
        from typing import overload
        from ...lib._resources import parse as _parse

        class Responses:
            @overload
            def create(self, *, stream: bool) -> int: ...
            @overload
            def create(self) -> str: ...
            def create(self, **kw): return 1
            def parse(self, **kw): return _parse(self, **kw)

        class AsyncResponses:
            parse = Responses.parse
            async def create(self, **kw): return 1
        """
    )
    src = wheel(
        **{
            "openai/resources/responses/__init__.py": "",
            "openai/resources/responses/responses.py": body,
            "openai/lib/_resources.py": "def parse(resource, **kw): ...\n",
        }
    )
    for attr in ("Responses.create", "Responses.parse", "AsyncResponses.create", "AsyncResponses.parse"):
        assert vt.resolve(src, R + "responses.responses", attr).ok, attr


def test_inherited_method_is_not_defined_on_the_class() -> None:
    body = "class Base:\n    def create(self): ...\nclass Edits(Base):\n    pass\n"
    src = wheel(**{"openai/resources/edits.py": body})
    assert vt.resolve(src, R + "edits", "Edits.create").reason == "no method"


def test_later_binding_wins() -> None:
    # A class rebound to something that is not a class (here: a stdlib import) no longer resolves.
    body = pair("Edits", "create") + "\nfrom typing import Any as Edits\n"
    src = wheel(**{"openai/resources/edits.py": body})
    assert vt.resolve(src, R + "edits", "Edits.create").reason == "no class"


def test_unparseable_module_is_reported_not_treated_as_absent() -> None:
    src = wheel(**{"openai/resources/edits.py": "class Edits(:\n"})
    res = vt.resolve(src, R + "edits", "Edits.create")
    assert not res.ok and res.reason.startswith("unparseable")


def test_import_cycle_terminates() -> None:
    src = wheel(
        **{"openai/resources/a.py": "from .b import X\n", "openai/resources/b.py": "from .a import X\n"}
    )
    assert vt.resolve(src, R + "a", "X.create").reason == "no class"


def test_module_whose_import_chain_breaks_does_not_resolve() -> None:
    # openai 1.99.0: responses.py -> lib/streaming/responses/_events.py imports a type the release lacks.
    src = wheel(
        **{
            "openai/resources/responses/__init__.py": "from .responses import Responses, AsyncResponses\n",
            "openai/resources/responses/responses.py": "from ...lib.streaming import Manager\n"
            + pair("Responses", "create"),
            "openai/lib/streaming/__init__.py": "from ._events import Manager\n",
            "openai/lib/streaming/_events.py": "from ...types import DoneEvent\nclass Manager: ...\n",
            "openai/types/__init__.py": "from .other import OtherEvent as OtherEvent\n",
            "openai/types/other.py": "class OtherEvent: ...\n",
        }
    )
    res = vt.resolve(src, R + "responses.responses", "Responses.create")
    assert not res.ok
    assert (
        res.reason
        == "import fails: openai.lib.streaming._events: cannot import 'DoneEvent' from openai.types"
    )


def test_import_chain_accepts_submodules_namespaces_stars_and_guarded_imports() -> None:
    src = wheel(
        **{
            "openai/resources/edits.py": dedent(
                """
                from typing import TYPE_CHECKING
                from .. import types
                from ..types import edit
                from ..types.edit import Edit
                from ..lib import azure
                if TYPE_CHECKING:
                    from ..types import NotThere
                try:
                    from ..types import AlsoNotThere
                except ImportError:
                    AlsoNotThere = None
                """
            )
            + pair("Edits", "create"),
            "openai/types/__init__.py": "from .edit import *\n",
            "openai/types/edit.py": "class Edit: ...\n",
            "openai/lib/azure.py": "",  # openai/lib has no __init__.py in 1.0.0: a namespace package
        }
    )
    assert vt.resolve(src, R + "edits", "Edits.create").ok


def test_import_of_a_missing_internal_module_is_reported() -> None:
    src = wheel(**{"openai/resources/edits.py": "from .._gone import x\n" + pair("Edits", "create")})
    reason = vt.resolve(src, R + "edits", "Edits.create").reason
    assert reason == "import fails: openai.resources.edits imports missing module openai._gone"


# ---------------------------------------------------------------------------------------------------------
# Comparing observations with claimed ranges

EDITS_ROW = Target(R + "edits", "Edits.create", "edits", "1.0.0", "1.7.1")
EDITS_SRC = {"openai/resources/edits.py": pair("Edits", "create")}


def observe(layouts: dict[str, dict[str, str]], rows: tuple[Target, ...] = (EDITS_ROW,)) -> dict:
    return {v: vt.check_source(wheel(**files), rows) for v, files in layouts.items()}


def test_exact_range_passes() -> None:
    obs = observe({"1.0.0": EDITS_SRC, "1.7.1": EDITS_SRC, "1.7.2": {}, "2.0.0": {}})
    (report,) = vt.compare((EDITS_ROW,), obs)
    assert report.ok
    assert report.observed == [("1.0.0", "1.7.1")]
    assert report.checked == 4
    assert report.resolved == 2


def test_row_resolving_after_its_last_version_is_a_finding() -> None:
    obs = observe(
        {"1.0.0": EDITS_SRC, "1.7.1": EDITS_SRC, "1.7.2": EDITS_SRC, "1.8.0": EDITS_SRC, "2.0.0": {}}
    )
    (report,) = vt.compare((EDITS_ROW,), obs)
    assert not report.ok
    assert report.findings == ["resolves outside the claimed range: 1.7.2-1.8.0"]
    assert report.observed == [("1.0.0", "1.8.0")]


def test_row_resolving_before_its_first_version_is_a_finding() -> None:
    row = Target(R + "edits", "Edits.create", "edits", "1.5.0")
    obs = observe({"1.0.0": {}, "1.4.0": EDITS_SRC, "1.5.0": EDITS_SRC}, (row,))
    (report,) = vt.compare((row,), obs)
    assert report.findings == ["resolves outside the claimed range: 1.4.0"]


def test_row_missing_inside_its_range_is_a_finding() -> None:
    obs = observe({"1.0.0": EDITS_SRC, "1.3.0": {}, "1.5.0": {}, "1.7.1": EDITS_SRC})
    (report,) = vt.compare((EDITS_ROW,), obs)
    assert report.findings == ["missing inside the claimed range (no module): 1.3.0-1.5.0"]
    assert vt.format_runs(report.observed) == "1.0.0, 1.7.1"


def test_missing_async_twin_is_a_finding() -> None:
    sync_only = {
        "openai/resources/edits.py": "class Edits:\n    def create(self): ...\nclass AsyncEdits: ...\n"
    }
    obs = observe({"1.0.0": EDITS_SRC, "1.1.0": sync_only})
    (report,) = vt.compare((EDITS_ROW,), obs)
    assert report.findings == ["sync only: AsyncEdits.create no method: 1.1.0"]


def test_known_broken_release_is_a_note_not_a_finding() -> None:
    broken = {"openai/resources/edits.py": "from .._gone import x\n" + pair("Edits", "create")}
    obs = observe({"1.0.0": EDITS_SRC, "1.5.0": broken, "1.7.1": EDITS_SRC})
    (report,) = vt.compare((EDITS_ROW,), obs, {("1.5.0", R + "edits"): "broken upstream"})
    assert report.ok and report.notes and report.notes[0].startswith("1.5.0: broken upstream")
    # without the exception it is a finding; and the exception never excuses a plain absence
    assert not vt.compare((EDITS_ROW,), obs, {})[0].ok
    gone = observe({"1.0.0": EDITS_SRC, "1.5.0": {}, "1.7.1": EDITS_SRC})
    assert not vt.compare((EDITS_ROW,), gone, {("1.5.0", R + "edits"): "broken upstream"})[0].ok


def test_contiguous_runs_and_format() -> None:
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]
    assert vt.contiguous_runs(versions, ["1.0.0", "1.1.0", "1.3.0"]) == [
        ("1.0.0", "1.1.0"),
        ("1.3.0", "1.3.0"),
    ]
    assert vt.contiguous_runs(versions, []) == []
    assert vt.format_runs([("1.0.0", "1.1.0"), ("1.3.0", "1.3.0")]) == "1.0.0-1.1.0, 1.3.0"
    assert vt.format_runs([]) == "none"


def test_summary_and_markdown() -> None:
    obs = observe({"1.0.0": EDITS_SRC, "1.7.1": EDITS_SRC, "1.7.2": EDITS_SRC})
    reports = vt.compare((EDITS_ROW,), obs)
    lines = vt.summary_lines(reports)
    assert lines[0].startswith("MISMATCH") and "resolves outside" in lines[1]
    md = vt.render_markdown(reports, ["1.0.0", "1.7.1", "1.7.2"], dt.date(2026, 1, 2), 12.0)
    assert "2026-01-02" in md and "**1.7.2**" in md and "mismatches: **1**" in md
    row = "| `openai.resources.edits` : `Edits.create` / `AsyncEdits.create` | edits | 1.0.0-1.7.1 | "
    assert row + "1.0.0-1.7.2 (3 releases) | 3 | MISMATCH: resolves outside the claimed range: 1.7.2 |" in md


# ---------------------------------------------------------------------------------------------------------
# Release listing and the whole command, offline (file:// index and wheels)


def test_releases_from_index_filters_and_sorts() -> None:
    def wheel_file(v: str) -> dict:
        return {
            "packagetype": "bdist_wheel",
            "filename": f"openai-{v}-py3-none-any.whl",
            "url": f"../../packages/openai-{v}-py3-none-any.whl",
            "digests": {"sha256": "0" * 64},
            "size": 1,
        }

    sdist = {"packagetype": "sdist", "filename": "x.tar.gz", "url": "x", "digests": {"sha256": ""}}
    index = {
        "releases": {
            "1.10.0": [sdist, wheel_file("1.10.0")],
            "1.9.0": [wheel_file("1.9.0")],
            "1.0.0rc1": [wheel_file("1.0.0rc1")],
            "0.28.1": [sdist],
            "2.0.0": [],
        }
    }
    rels = vt.releases_from_index(index, "https://pypi.example/pypi/openai/json")
    assert [r.version for r in rels] == ["1.9.0", "1.10.0"]
    assert rels[0].url == "https://pypi.example/packages/openai-1.9.0-py3-none-any.whl"
    assert [r.version for r in vt.select_range(rels, "1.10.0", "latest")] == ["1.10.0"]
    assert [r.version for r in vt.select_range(rels, "1.0.0", "1.9.0")] == ["1.9.0"]


def _synthetic_wheel(rows: tuple[Target, ...], version: str) -> bytes:
    """A wheel that has exactly the rows covering `version` (grouped into one module per row module)."""
    modules: dict[str, dict[str, set[str]]] = {}
    for t in rows:
        if t.covers(version):
            modules.setdefault(t.module, {}).setdefault(t.class_name, set()).add(t.method_name)
            for attr in (a for pair_ in vt.session_hooks(t) for a in pair_):  # a connect row's hooked classes
                cls, method = attr.removeprefix("Async").split(".")
                modules[t.module].setdefault(cls, set()).add(method)
    files = dict(BASE)
    for module, classes in modules.items():
        parts = module.split(".")
        for i in range(2, len(parts)):
            files.setdefault("/".join(parts[:i]) + "/__init__.py", "")
        # a module that is also a parent of another row's module must be a package
        is_package = any(m.startswith(module + ".") for m in modules)
        name = "/".join(parts) + ("/__init__.py" if is_package else ".py")
        files[name] = "\n".join(pair(c, *sorted(ms)) for c, ms in classes.items())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def test_main_end_to_end_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Three releases built from the table itself pass; a fourth that keeps `edits` past 1.7.1 fails.
    releases: dict[str, list[dict]] = {}
    for v in ("1.0.0", "1.7.1", "1.7.2", "2.45.0"):
        data = _synthetic_wheel(TARGETS, v if v != "1.7.2" else "1.7.1")  # 1.7.2 still ships edits
        path = tmp_path / f"openai-{v}-py3-none-any.whl"
        path.write_bytes(data)
        releases[v] = [
            {
                "packagetype": "bdist_wheel",
                "filename": path.name,
                "url": path.as_uri(),
                "digests": {"sha256": hashlib.sha256(data).hexdigest()},
                "size": len(data),
            }
        ]
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"releases": releases}))
    docs = tmp_path / "compat.md"
    args = [
        "--cache",
        str(tmp_path / "cache"),
        "--index-url",
        index.as_uri(),
        "--write-docs",
        "--docs",
        str(docs),
    ]

    assert vt.main(args) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH {EDITS}" in out and "resolves outside the claimed range: 1.7.2" in out
    assert docs.read_text().count("| OK |") == len(TARGETS) - 1

    assert vt.main([*args, "--to", "1.7.1"]) == 0
    assert (tmp_path / "cache" / "openai-1.0.0-py3-none-any.whl").exists()
