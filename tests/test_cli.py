"""The launcher and the dispatcher: `cmdrdata-run`, `cmdrdata-autopatch run`, `python -m cmdrdata_autopatch`,
help texts, exit codes, and output into a pipe whose reader has gone.

Run as real commands (the console scripts of this interpreter) so what is tested is what a user types.
`doctor` and `report` have their own test modules.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from cmdrdata_autopatch import cli

from .apps.harness import CHAT_APP, clean_env, events, run
from .cli_helpers import CLI, CMDRDATA_RUN, PYTHON_M, assert_quiet_exit, run_into_closed_pipe

SECRET = "tk-live-0123456789abcdefXYZW"


@pytest.mark.parametrize(
    "command",
    [
        [*CLI, "--help"],
        [*CLI, "doctor", "--help"],
        [*CLI, "report", "--help"],
        [*CLI, "run", "--help"],
        [*CMDRDATA_RUN, "--help"],
    ],
)
def test_help(command: list[str], tmp_path: Path) -> None:
    result = run(command, clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    assert run([*CLI], env).returncode == 2
    assert run([*CLI, "frobnicate"], env).returncode == 2
    assert run([*CLI, "doctor", "--bogus"], env).returncode == 2
    assert run([*CMDRDATA_RUN, "--bogus", "python"], env).returncode == 2
    version = run([*CLI, "--version"], env)
    assert version.returncode == 0 and "cmdrdata-autopatch" in version.stdout


def test_run_subcommand_is_the_launcher(tmp_path: Path) -> None:
    result = run([*CLI, "run", sys.executable, str(CHAT_APP)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "tracked=True" in result.stdout
    assert len(events(tmp_path)) == 1
    assert run([*CLI, "run", "no-such-command-cmdrdata-test"], clean_env(tmp_path)).returncode == 127


def test_info_masks_the_key_and_validates(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    del env["CMDRDATA_EXPORTER"]
    result = run(
        [*CMDRDATA_RUN, "--api-key", SECRET, "--customer-id", "acme", "--info", "python", "app.py"], env
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and "****XYZW" in result.stdout
    assert "acme" in result.stdout and "http" in result.stdout  # a key makes the http exporter the default
    bad = run(
        [*CMDRDATA_RUN, "--exporter", "carrier-pigeon", "--info"], env
    )  # the option itself: usage error
    assert bad.returncode == 2 and "--exporter='carrier-pigeon' must be one of" in bad.stderr
    bad = run([*CMDRDATA_RUN, "--info"], {**env, "CMDRDATA_EXPORTER": "carrier-pigeon"})
    assert bad.returncode == 1 and "CMDRDATA_EXPORTER" in bad.stdout
    noted = run([*CMDRDATA_RUN, "--info"], {**env, "CMDRDATA_LOG_LEVEL": "verbose"})
    assert noted.returncode == 0 and "warning: CMDRDATA_LOG_LEVEL='verbose'" in noted.stdout


def test_python_m_is_the_dispatcher(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    help_ = run([*PYTHON_M, "--help"], env)
    assert help_.returncode == 0 and "usage: python -m cmdrdata_autopatch" in help_.stdout
    for name in cli.SUBCOMMANDS:
        assert name in help_.stdout
    assert run([*PYTHON_M, "frobnicate"], env).returncode == 2
    assert run([*PYTHON_M], env).returncode == 2
    (tmp_path / "usage.jsonl").write_text(json.dumps({"event_id": "e1", "customer_id": "acme"}) + "\n")
    report = run([*PYTHON_M, "report", "--json"], env)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["by_customer"][0]["customer_id"] == "acme"
    launched = run([*PYTHON_M, "run", sys.executable, str(CHAT_APP)], env)
    assert launched.returncode == 0 and "tracked=True" in launched.stdout


def test_every_subcommand_row_names_a_command_function() -> None:
    for name, row in cli.SUBCOMMANDS.items():
        function = cli._load(row)
        assert callable(function), name
        assert function.__name__ == row.function


def test_the_launcher_does_not_load_the_other_commands(tmp_path: Path) -> None:
    # `cmdrdata-run` starts every tracked program: it must not pay for doctor/report on the way.
    code = "import sys, cmdrdata_autopatch.cli; print(*sorted(sys.modules), sep=chr(10))"
    result = run([sys.executable, "-c", code], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "cmdrdata_autopatch.cli" in loaded
    for module in ("doctor", "report", "report_query", "report_html", "replay", "pricing"):
        assert f"cmdrdata_autopatch.{module}" not in loaded


@pytest.mark.parametrize(
    "args",
    [["--help"], ["doctor", "--help"], ["report", "--help"], ["--version"]],
)
def test_help_into_a_closed_pipe_is_quiet(args: list[str], tmp_path: Path) -> None:
    result = run_into_closed_pipe([*CLI, *args], clean_env(tmp_path))
    assert result.returncode == 0
    assert_quiet_exit(result.stderr)


def test_info_into_a_closed_pipe_keeps_its_status(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    assert run_into_closed_pipe([*CMDRDATA_RUN, "--info"], env).returncode == 0
    bad = run_into_closed_pipe([*CMDRDATA_RUN, "--info"], {**env, "CMDRDATA_EXPORTER": "carrier-pigeon"})
    assert bad.returncode == 1
    assert_quiet_exit(bad.stderr)


def test_launch_env_puts_ours_first_once_and_applies_options(tmp_path: Path) -> None:
    ours = cli.bootstrap_dir()
    env = cli.launch_env(
        {"customer_id": "acme", "exporter": None},
        {"PYTHONPATH": os.pathsep.join([str(tmp_path), ours]), "CMDRDATA_EXPORTER": "jsonl"},
    )
    assert env["PYTHONPATH"].split(os.pathsep) == [ours, str(tmp_path)]
    assert env["CMDRDATA_AUTOPATCH"] == "1" and env["CMDRDATA_CUSTOMER_ID"] == "acme"
    assert env["CMDRDATA_EXPORTER"] == "jsonl"  # an option not given leaves the environment's value
    assert os.path.isfile(os.path.join(ours, "sitecustomize.py"))


def test_a_new_row_is_a_new_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # The merge seam: `replay` (delivery rebuild) becomes a command by adding its row.
    import types

    seen: list[tuple[list[str], str]] = []

    def replay_main(argv: list[str], prog: str) -> int:
        seen.append((list(argv), prog))
        return 3

    module = types.ModuleType("cmdrdata_autopatch.replay")
    module.replay_main = replay_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cmdrdata_autopatch.replay", module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "replay", cli.Subcommand("replay", "replay_main", "deliver now"))
    assert cli.main(["replay", "--timeout", "5"]) == 3
    assert seen == [(["--timeout", "5"], "cmdrdata-autopatch replay")]


def test_a_command_printing_into_a_closed_pipe_gets_no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    silenced: list[object] = []

    def noisy_main(argv: list[str], prog: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")  # what print() raises once `| head` has gone

    module = types.ModuleType("cmdrdata_autopatch.noisy")
    module.noisy_main = noisy_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cmdrdata_autopatch.noisy", module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "noisy", cli.Subcommand("noisy", "noisy_main", "prints"))
    monkeypatch.setattr(cli, "silence_stdout", lambda: silenced.append(True))  # not this pytest's stdout
    assert cli.main(["noisy"]) == cli.EXIT_PROBLEM
    assert silenced == [True]
