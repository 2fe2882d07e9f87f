"""Packaging polish (issue 13 item 7): Project-URLs, README links that work on PyPI, the import name, and
DeprecationWarnings of deprecated SDK methods pointing at the caller's line, not at our wrapper."""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

import cmdrdata_autopatch as cmdrdata

from .fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_project_urls() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    urls = project["urls"]
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues"}
    assert all(url.startswith("https://github.com/cmdrdata-ai/cmdrdata-autopatch") for url in urls.values())


def test_readme_links_work_outside_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#", "mailto:"))]
    assert relative == [], relative  # PyPI renders the README away from the repository
    prefix = "https://github.com/cmdrdata-ai/cmdrdata-autopatch/blob/main/"
    for target in targets:
        if target.startswith(prefix):
            assert (ROOT / target[len(prefix) :].split("#")[0]).exists(), target


def test_readme_names_the_import_and_the_other_package() -> None:
    text = (ROOT / "README.md").read_text()
    assert "import cmdrdata_autopatch as cmdrdata" in text
    assert "The PyPI package named `cmdrdata` is a different SDK" in text


def test_no_top_level_cmdrdata_module_is_shipped() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["cmdrdata_autopatch"]
    assert not (ROOT / "cmdrdata").exists() and not (ROOT / "cmdrdata.py").exists()


def _variation_warnings(call: Any) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, DeprecationWarning)]


def _is_deprecated() -> bool:
    from openai.resources.images import Images

    return getattr(Images.__dict__.get("create_variation"), "__deprecated__", None) is not None


needs_deprecated = pytest.mark.skipif(not _is_deprecated(), reason="create_variation is not deprecated here")


@needs_deprecated
def test_deprecation_warning_points_at_the_callers_line(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    line = sys._getframe().f_lineno + 1
    caught = _variation_warnings(lambda: client.images.create_variation(image=PNG))
    assert len(caught) == 1, [str(w.message) for w in caught]  # once: the SDK's own is not repeated
    assert caught[0].filename == __file__ and caught[0].lineno == line
    assert len(memory.events) == 1  # still billed


@needs_deprecated
def test_deprecation_warning_async_and_error_filter(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.async_client()
    line = sys._getframe().f_lineno + 1
    caught = _variation_warnings(lambda: asyncio.run(client.images.create_variation(image=PNG)))
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # -W error: raised at the call, as without us, and nothing is sent
        with pytest.raises(DeprecationWarning):
            fake.client().images.create_variation(image=PNG)


@needs_deprecated
def test_deprecation_warning_from_threads(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                client.images.create_variation(image=PNG)
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 20
    assert {w.filename for w in deprecations} == {__file__}
    assert len(memory.events) == 20
