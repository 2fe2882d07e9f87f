"""Run the test suite against real `openai` releases, one virtualenv per release.

    nox -l                                   # list sessions
    nox -s "tests(openai='1.0.0')"           # one release
    nox -t ci                                # the CI subset: oldest 1.x, 1.109.1, 2.54.0, newest
    nox -t realtime                          # first release of each WebSocket surface (issue 11)
    nox -s tests                             # every release below
    nox -s verify-targets [-- --write-docs]  # the table against every published wheel (downloads ~400)
    nox -s lint typecheck
    nox -t libraries                         # real libraries (langchain-openai, openai-agents, litellm,
                                             # instructor, llama-index) on openai 1.x, 2.x, 3.x against a
                                             # loopback fake OpenAI
    nox -s "libraries(litellm-openai3)"      # one of them

Why these releases: each one sits on a boundary of `../shared/research/openai_surface.md` (chat `parse` moving
from beta at 1.92.0, the chat package split at 1.63.0, responses at 1.66.x, httpx2 at 3.0.0, lazy package
exports at 3.16.1, one-line delegates at 3.38.0, ...), so a regression in how we resolve or wrap a target
shows up on the release that changed it. "latest" is resolved from PyPI when the session runs, so a new
SDK release is tested the day it ships.

Each release runs on a Python it supports (openai >= 2.49 and every 3.x need >= 3.10), spread over 3.9-3.13
so every interpreter we claim gets exercised. Releases before 1.55.3 pass `proxies=` to httpx, which httpx
0.28 removed, so they get `httpx<0.28`; the newest pydantic that still installs on the session's Python
works with every 1.x checked (1.0.0 on 3.9 with pydantic 2.13 passes), so pydantic is not pinned.

uv is the virtualenv backend: a session's environment is created and filled in a few seconds.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Optional

import nox

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
# `nox` with no -s/-t: everything except the verifier, which downloads every wheel and runs on a schedule.
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).resolve().parent
PYPI_JSON = "https://pypi.org/pypi/openai/json"


def _expose_pyenv_interpreters() -> None:
    """Put every pyenv-installed CPython's bin/ on PATH.

    pyenv's shims answer only for the versions selected by `pyenv global/local`, so `python3.9` fails
    through the shim even when 3.9 is installed, and uv/nox cannot find it. Adding the real bin/ folders is
    harmless where pyenv is absent (no folders, PATH unchanged).
    """
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if not versions.is_dir():
        return
    bins = [str(p / "bin") for p in sorted(versions.iterdir(), reverse=True) if (p / "bin").is_dir()]
    os.environ["PATH"] = os.pathsep.join([*bins, os.environ.get("PATH", "")])


_expose_pyenv_interpreters()

# (openai release, Python, extra pins, tags). Keep the CI subset small: `.ci/run` has 30 minutes on 2 cores.
OLD_HTTPX = "httpx<0.28"  # releases < 1.55.3 pass `proxies=` to httpx.Client
RELEASES: list[tuple[str, str, tuple[str, ...], list[str]]] = [
    ("1.0.0", "3.9", (OLD_HTTPX,), ["ci", "openai1"]),
    ("1.14.0", "3.9", (OLD_HTTPX,), ["openai1", "objects"]),  # first assistants run streams (+ helpers)
    ("1.16.0", "3.10", (OLD_HTTPX,), ["openai1", "objects"]),  # first runs.stream / runs.poll
    ("1.18.0", "3.9", (OLD_HTTPX,), ["openai1", "objects"]),  # first batches (create / retrieve)
    ("1.22.0", "3.10", (OLD_HTTPX,), ["openai1", "objects"]),  # first batches.list
    ("1.26.0", "3.9", (OLD_HTTPX,), ["openai1"]),
    ("1.40.0", "3.10", (OLD_HTTPX,), ["openai1"]),
    ("1.50.0", "3.10", (OLD_HTTPX,), ["openai1"]),
    ("1.58.0", "3.9", ("websockets>=13,<15",), ["openai1", "realtime"]),  # first beta.realtime.connect
    ("1.63.0", "3.11", (), ["openai1"]),
    ("1.66.5", "3.11", (), ["openai1"]),
    ("1.72.0", "3.11", (), ["openai1", "objects"]),  # first evals.runs (per_model_usage)
    ("1.78.0", "3.12", (), ["openai1"]),
    ("1.80.0", "3.11", (), ["openai1", "objects"]),  # first background responses (no cancel yet)
    ("1.82.0", "3.12", (), ["openai1", "objects"]),  # first responses.retrieve(stream=True)
    ("1.92.0", "3.12", (), ["openai1"]),
    ("1.103.0", "3.9", (), ["openai1", "realtime"]),  # first GA realtime.connect
    ("1.109.1", "3.13", (), ["ci", "openai1"]),
    ("2.0.0", "3.9", (), ["openai2", "objects"]),  # first Batch.usage
    ("2.22.0", "3.10", (), ["openai2", "realtime"]),  # first responses.connect (Responses WebSocket)
    ("2.45.0", "3.12", (), ["openai2", "realtime"]),  # first beta.responses.connect
    ("2.54.0", "3.13", (), ["ci", "openai2"]),
    ("3.0.0", "3.10", (), ["openai3"]),
    ("3.12.0", "3.12", (), ["openai3", "realtime"]),  # first Live (live / sideband / forks .connect)
    ("3.13.0", "3.12", (), ["openai3", "objects"]),  # first beta.agents (session turn events)
    ("3.16.1", "3.11", (), ["openai3"]),
    ("3.25.0", "3.11", (), ["openai3", "objects"]),  # first beta.agents.sessions.turns
    ("3.32.0", "3.11", (), ["openai3", "realtime"]),  # WebSocket connections get a shared base class
    ("3.38.0", "3.12", (), ["openai3"]),
    ("3.41.0", "3.12", (), ["openai3", "objects"]),  # first Response.tool_usage
    ("latest", "3.13", (), ["ci", "openai3"]),
]


def latest_openai(timeout: float = 30.0) -> Optional[str]:
    """The newest `openai` release on PyPI, or None if the index cannot be read (then install unpinned)."""
    try:
        with urllib.request.urlopen(PYPI_JSON, timeout=timeout) as resp:
            version: str = json.load(resp)["info"]["version"]
            return version
    except (OSError, ValueError, KeyError):
        return None


@nox.session(tags=["compat"])
@nox.parametrize(
    "python,openai",
    [nox.param(py, ver, id=f"openai={ver!r}", tags=tags) for ver, py, _, tags in RELEASES],
)
def tests(session: nox.Session, openai: str) -> None:
    """The pytest suite against one real `openai` release (e.g. `tests(openai='1.0.0')`)."""
    pins = next(p for ver, _, p, _ in RELEASES if ver == openai)
    if openai == "latest":
        newest = latest_openai()
        spec = f"openai=={newest}" if newest else "openai"
        session.log(f"newest openai on PyPI: {newest or 'unknown (installing unpinned)'}")
    else:
        spec = f"openai=={openai}"
    # one resolve for everything, so the pins constrain the project's own dependencies too
    session.install("-e", ".[test]", spec, *pins)
    session.run("python", "-c", "import sys, openai; print(sys.version.split()[0], openai.__version__)")
    session.run("pytest", *session.posargs)


# Real libraries that call OpenAI for an app (issue 15), each in its own session, on each `openai` major:
# the library is unpinned and the resolver picks the newest release of it that installs beside the newest
# openai of that major, so a new release is tested the day it ships and each library keeps the newest
# openai it supports. On 2026-12-01 that resolves to:
#   openai3: langchain-openai 1.7.4, openai-agents 0.24.0, litellm 1.110.2 with openai 3.57.0, and
#            instructor 1.17.0 with openai 3.3.0 (it caps jiter < 0.15; openai >= 3.4 needs jiter >= 0.16)
#   openai2: langchain-openai 1.7.4, openai-agents 0.20.0, litellm 1.110.2, instructor 1.17.0 (openai 2.54.0)
#   openai1: langchain-openai 1.1.9, openai-agents 0.3.3, litellm 1.80.0, instructor 1.12.0 (openai 1.109.1)
#   llama-index (llms-openai 0.8.3, embeddings-openai 0.7.0, core 0.14.25) caps openai < 3: openai2 and
#   openai1 only (2.54.0 and 1.109.1).
# The session prints the versions it got. Tests run against a loopback fake OpenAI
# (tests/libraries/fake_server.py); a guard fails any test that tries to reach another host.
# `pytest tests/libraries` in any environment skips the libraries that are not installed.
LIBRARY_MODULES = {  # session name: (what to install, test module, openai majors it installs beside)
    "langchain-openai": (("langchain-openai",), "test_langchain_openai.py", "321"),
    "openai-agents": (("openai-agents",), "test_openai_agents.py", "321"),
    "litellm": (("litellm",), "test_litellm.py", "321"),
    "instructor": (("instructor",), "test_instructor.py", "321"),
    "llama-index": (
        ("llama-index-llms-openai", "llama-index-embeddings-openai"),
        "test_llama_index.py",
        "21",
    ),
}
OPENAI_MAJORS = {"1": ("openai<2", "3.11"), "2": ("openai>=2,<3", "3.12"), "3": ("openai>=3,<4", "3.13")}
LIBRARY_SESSIONS = [
    (lib, major)
    for major in ("3", "2", "1")
    for lib, (_, _, majors) in LIBRARY_MODULES.items()
    if major in majors
]
LIBRARY_VERSIONS = """
import importlib.metadata as m, sys
names = ["openai", "langchain-openai", "langchain-core", "openai-agents", "litellm", "instructor",
         "llama-index-core", "llama-index-llms-openai", "llama-index-embeddings-openai"]
found = []
for name in names:
    try:
        found.append(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        pass
print("python", sys.version.split()[0], "|", ", ".join(found))
"""


@nox.session
@nox.parametrize(
    "python,library,major",
    [
        nox.param(OPENAI_MAJORS[major][1], lib, major, id=f"{lib}-openai{major}", tags=["ci", "libraries"])
        for lib, major in LIBRARY_SESSIONS
    ],
)
def libraries(session: nox.Session, library: str, major: str) -> None:
    """One real library against a loopback OpenAI (e.g. `libraries(litellm-openai3)`): one exact event
    per HTTP call, the library's output unchanged."""
    requirements, module_name, _ = LIBRARY_MODULES[library]
    session.install("-e", ".[test]", *requirements, OPENAI_MAJORS[major][0])
    session.run("python", "-c", LIBRARY_VERSIONS)
    module = f"tests/libraries/{module_name}"
    session.run("pytest", "-q", "tests/libraries/test_fake_server.py", module, *session.posargs)


@nox.session(name="verify-targets", python="3.13")
def verify_targets(session: nox.Session) -> None:
    """Prove the version table against every published wheel (network; on demand and on a schedule).

    The newest Python parses every release's syntax. Pass options through: `-- --from 3.0.0 --write-docs`.
    """
    session.install("-e", ".")
    session.run("python", "-m", "tools.verify_targets", *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    """ruff check + ruff format --check over the whole repo (config in pyproject.toml)."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.12")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, against the newest openai (its stubs are the most complete)."""
    session.install("-e", ".", "mypy>=1.8")
    session.run("mypy", "--strict", "cmdrdata_autopatch")
