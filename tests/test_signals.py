"""SIGTERM / SIGINT run the bounded exit drain, chain to the application's handlers, and keep the status.

Each case runs a real child process against the loopback CmdrData with 50 ms of latency, stops it the way
`docker stop`, Kubernetes, systemd or `Pool.terminate()` would, and counts what the server stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .apps.harness import APPS_DIR, console_script
from .cmdrdata_server import FakeCmdrData
from .support import child_env, eventually, start_python

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
KEY = "tk-signal-test-key-0001"

RECORDER = """
import os, signal, sys, time
sys.path.insert(0, os.environ["REPO"])
from tests.support import make_event
import cmdrdata_autopatch as cmdrdata
{before}
cmdrdata.patch()
{after}
exporter = cmdrdata.get_exporter()
for i in range(int(os.environ["N"])):
    exporter.record(make_event(i))
print("READY", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def server() -> Iterator[FakeCmdrData]:
    with FakeCmdrData(latency=0.05) as fake:
        yield fake


def _env(server: FakeCmdrData, tmp_path: Path, n: int, **extra: str) -> dict[str, str]:
    env = {
        "CMDRDATA_API_KEY": KEY,
        "CMDRDATA_ENDPOINT": server.url,
        "CMDRDATA_SPOOL_DIR": str(tmp_path / "spool"),
        "N": str(n),
        "REPO": str(Path(__file__).resolve().parents[1]),
    }
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), (line, proc.stderr.read() if proc.stderr else "")
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return proc.returncode, err


@POSIX
def test_sigterm_without_a_handler_drains_then_dies_of_sigterm(server: FakeCmdrData, tmp_path: Path) -> None:
    proc = start_python(RECORDER.format(before="", after=""), _env(server, tmp_path, 200))
    code, err = _stop(proc, signal.SIGTERM)
    assert code == -signal.SIGTERM, err  # the status the signal would have given
    assert len(server.stored) == 200, err  # nothing lost: the queue was drained first


@POSIX
def test_sigterm_with_an_app_handler_installed_before_patch_keeps_the_app_in_charge(
    server: FakeCmdrData, tmp_path: Path
) -> None:
    before = "signal.signal(signal.SIGTERM, lambda s, f: (print('APP-HANDLER', flush=True), sys.exit(7)))"
    proc = start_python(RECORDER.format(before=before, after=""), _env(server, tmp_path, 150))
    assert proc.stdout is not None
    code, err = _stop(proc, signal.SIGTERM)
    assert code == 7, err  # the application's handler decided how to exit
    assert len(server.stored) == 150, err  # and its sys.exit ran our exit drain


@POSIX
def test_sigterm_with_an_app_handler_installed_after_patch(server: FakeCmdrData, tmp_path: Path) -> None:
    after = "signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))"
    proc = start_python(RECORDER.format(before="", after=after), _env(server, tmp_path, 150))
    code, err = _stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert len(server.stored) == 150, err


@POSIX
def test_sigint_raises_keyboardinterrupt_as_usual_and_drains(server: FakeCmdrData, tmp_path: Path) -> None:
    proc = start_python(RECORDER.format(before="", after=""), _env(server, tmp_path, 100))
    code, err = _stop(proc, signal.SIGINT)
    assert "KeyboardInterrupt" in err
    assert code in (-signal.SIGINT, 1), err
    assert len(server.stored) == 100, err


@POSIX
def test_sigterm_during_an_outage_keeps_every_event_on_disk(tmp_path: Path) -> None:
    with FakeCmdrData() as down:
        url = down.url
    proc = start_python(
        RECORDER.format(before="", after=""),
        {
            "CMDRDATA_API_KEY": KEY,
            "CMDRDATA_ENDPOINT": url,  # nobody listens any more
            "CMDRDATA_SPOOL_DIR": str(tmp_path / "spool"),
            "CMDRDATA_EXIT_TIMEOUT": "0.5",
            "N": "251",
            "REPO": str(Path(__file__).resolve().parents[1]),
        },
    )
    code, err = _stop(proc, signal.SIGTERM)
    assert code == -signal.SIGTERM, err
    lines = sum(len(p.read_bytes().splitlines()) for p in (tmp_path / "spool").rglob("*.jsonl"))
    assert lines == 251, err  # the first release lost all 251
    assert "251 saved" in err


@POSIX
def test_uvicorn_under_cmdrdata_run_stopped_with_sigterm_delivers_every_call(
    server: FakeCmdrData, tmp_path: Path
) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    import httpx

    sock = str(tmp_path / "app.sock")
    env = child_env(
        {
            "CMDRDATA_API_KEY": KEY,
            "CMDRDATA_ENDPOINT": server.url,
            "CMDRDATA_SPOOL_DIR": str(tmp_path / "spool"),
            "PYTHONPATH": str(APPS_DIR),
        }
    )
    command = [
        *console_script("cmdrdata-run"),
        sys.executable,
        "-m",
        "uvicorn",
        "uvicorn_app:app",
        "--uds",
        sock,
    ]
    proc = subprocess.Popen(
        command, env=env, cwd=str(APPS_DIR), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert eventually(lambda: os.path.exists(sock) or proc.poll() is not None, 30)
        with httpx.Client(transport=httpx.HTTPTransport(uds=sock), timeout=10) as client:
            for _ in range(10):
                assert client.get("http://app/chat").json() == {"answer": "ok"}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert len(server.stored) == 10, err.decode(errors="replace")  # the first release recorded 0 of 10
    assert proc.returncode in (0, -signal.SIGTERM)


POOL_APP = """
import multiprocessing, os, sys, time
sys.path.insert(0, os.environ["REPO"])
import cmdrdata_autopatch as cmdrdata
from tests.support import make_event
cmdrdata.patch()

def work(i):
    cmdrdata.get_exporter().record(make_event(i))
    return i

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:  # __exit__ terminates the workers with SIGTERM
        assert sorted(pool.map(work, range(60), chunksize=1)) == list(range(60))
    print("POOL-DONE", flush=True)
"""


@POSIX
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_pool_context_workers_terminated_by_the_pool_lose_nothing(
    server: FakeCmdrData, tmp_path: Path
) -> None:
    started = time.monotonic()
    proc = start_python(POOL_APP, _env(server, tmp_path, 0))
    out, err = proc.communicate(timeout=60)
    assert "POOL-DONE" in out, err
    # whatever a worker could not deliver before the pool killed it is on disk, and this process replays it
    assert server.wait_for_stored(60, timeout=30), (len(server.stored), err)
    assert len(server.stored) == 60
    assert time.monotonic() - started < 60
