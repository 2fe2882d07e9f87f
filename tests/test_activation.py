"""Each zero-code route, proven in a real child process running an unmodified OpenAI program.

The program (`tests/apps/chat_app.py`) never imports cmdrdata_autopatch: it makes one chat call through a
real `openai` client over an in-memory transport. An event in the jsonl file (right customer, tokens as the
canned response reported them) proves the route patched the process; no event proves a route stayed off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cmdrdata_autopatch.cli import PTH_NAME, bootstrap_dir, installed_pth_files

from .apps.harness import APPS_DIR, CHAT_APP, REPO_ROOT, clean_env, console_script, events, run, warning_lines

CMDRDATA_RUN = console_script("cmdrdata-run")


def assert_one_chat_event(tmp_path: Path, customer: str = "env-customer") -> dict:
    got = events(tmp_path)
    assert len(got) == 1, got
    event = got[0]
    assert event["customer_id"] == customer
    assert event["api"] == "chat.completions"
    assert event["model"] == "gpt-4o-mini"
    assert (event["input_tokens"], event["output_tokens"]) == (11, 7)
    assert (event["cached_input_tokens"], event["reasoning_tokens"]) == (3, 2)
    assert event["usage_source"] == "reported"
    return event


def test_cmdrdata_run_python_script(tmp_path: Path) -> None:
    result = run([*CMDRDATA_RUN, sys.executable, str(CHAT_APP)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "tracked=True" in result.stdout
    assert warning_lines(result.stderr) == []
    assert_one_chat_event(tmp_path)


def test_cmdrdata_run_python_dash_m(tmp_path: Path) -> None:
    result = run([*CMDRDATA_RUN, sys.executable, "-m", "chat_app"], clean_env(tmp_path), cwd=APPS_DIR)
    assert result.returncode == 0, result.stderr
    assert "tracked=True" in result.stdout
    assert_one_chat_event(tmp_path)


def test_options_set_the_environment(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    del env["CMDRDATA_CUSTOMER_ID"]
    result = run([*CMDRDATA_RUN, "--customer-id", "from-option", sys.executable, str(CHAT_APP)], env)
    assert result.returncode == 0, result.stderr
    assert_one_chat_event(tmp_path, customer="from-option")


def test_child_process_of_the_program_is_tracked(tmp_path: Path) -> None:
    result = run([*CMDRDATA_RUN, sys.executable, str(CHAT_APP), "--spawn-child"], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("tracked=True") == 2, result.stdout
    assert sorted(e["customer_id"] for e in events(tmp_path)) == ["child-customer", "env-customer"]


def test_nested_launcher_neither_recurses_nor_double_counts(tmp_path: Path) -> None:
    result = run([*CMDRDATA_RUN, *CMDRDATA_RUN, sys.executable, str(CHAT_APP)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert_one_chat_event(tmp_path)


def test_user_sitecustomize_still_runs(tmp_path: Path) -> None:
    user_dir = tmp_path / "user_site"
    user_dir.mkdir()
    (user_dir / "sitecustomize.py").write_text(
        "import sys\nsys.stderr.write(f'USER-SITECUSTOMIZE-RAN argv={sys.argv!r}\\n')\nUSER_MARK = 42\n"
    )
    env = clean_env(tmp_path, PYTHONPATH=str(user_dir))
    probe = (
        "import runpy, sys, sitecustomize; "
        "print('user-module', getattr(sitecustomize, 'USER_MARK', None)); "
        f"runpy.run_path({str(CHAT_APP)!r}, run_name='__main__')"
    )
    result = run([*CMDRDATA_RUN, sys.executable, "-c", probe], env)
    assert result.returncode == 0, result.stderr
    # exactly once in the program (the launcher, itself a Python process, runs it too, as any Python would)
    assert result.stderr.count("USER-SITECUSTOMIZE-RAN argv=['-c']") == 1, result.stderr
    assert "user-module 42" in result.stdout  # `import sitecustomize` gives the user's module, not ours
    assert_one_chat_event(tmp_path)


def test_broken_user_sitecustomize_is_one_line_and_the_program_runs(tmp_path: Path) -> None:
    user_dir = tmp_path / "user_site"
    user_dir.mkdir()
    (user_dir / "sitecustomize.py").write_text("raise RuntimeError('boom in user sitecustomize')\n")
    result = run(
        [*CMDRDATA_RUN, sys.executable, str(CHAT_APP)], clean_env(tmp_path, PYTHONPATH=str(user_dir))
    )
    assert result.returncode == 0, result.stderr
    assert "boom in user sitecustomize" in result.stderr
    assert "Traceback" not in result.stderr
    assert_one_chat_event(tmp_path)


def test_disabled_wins_over_the_launcher(tmp_path: Path) -> None:
    env = clean_env(tmp_path, CMDRDATA_DISABLED="1")
    result = run([*CMDRDATA_RUN, sys.executable, str(CHAT_APP)], env)
    assert result.returncode == 0, result.stderr
    assert "tracked=False" in result.stdout
    assert events(tmp_path) == []
    probe = "import sys; print('ours-imported', 'cmdrdata_autopatch' in sys.modules)"
    result = run([*CMDRDATA_RUN, sys.executable, "-c", probe], env)
    assert "ours-imported False" in result.stdout  # not even imported: the kill switch costs nothing


def test_bad_billing_setting_warns_once_and_the_program_runs_untracked(tmp_path: Path) -> None:
    env = clean_env(tmp_path, CMDRDATA_EXPORTER="kafka")
    result = run([*CMDRDATA_RUN, sys.executable, str(CHAT_APP)], env)
    assert result.returncode == 0, result.stderr
    assert "APP-RAN" in result.stdout and "tracked=False" in result.stdout
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr  # the .pth and the bootstrap both fire; one line only
    assert "CMDRDATA_EXPORTER" in lines[0] and "'kafka'" in lines[0]
    # what the user did, not the mechanism that fired first (the .pth runs before the launcher's hook)
    assert "cmdrdata-run launcher" in lines[0] and "pth" not in lines[0]
    assert "Traceback" not in result.stderr
    assert events(tmp_path) == []


def test_bad_cosmetic_setting_warns_once_and_tracking_stays_on(tmp_path: Path) -> None:
    env = clean_env(tmp_path, CMDRDATA_QUEUE_SIZE="abc", CMDRDATA_LOG_LEVEL="verbose")
    result = run([*CMDRDATA_RUN, sys.executable, str(CHAT_APP)], env)
    assert result.returncode == 0, result.stderr
    assert "tracked=True" in result.stdout
    lines = warning_lines(result.stderr)
    assert len(lines) == 2, result.stderr  # one per bad value, although patch() runs from two routes
    assert any("CMDRDATA_QUEUE_SIZE='abc'" in line and "using the default (10000)" in line for line in lines)
    assert any("CMDRDATA_LOG_LEVEL='verbose'" in line and "DEBUG" in line for line in lines)
    assert_one_chat_event(tmp_path)


def test_unknown_name_warns_with_the_closest_one(tmp_path: Path) -> None:
    env = clean_env(tmp_path, CMDRDATA_CUSTOMERID="acme")
    result = run([*CMDRDATA_RUN, sys.executable, str(CHAT_APP)], env)
    assert "tracked=True" in result.stdout, result.stderr
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "CMDRDATA_CUSTOMERID is not a cmdrdata-autopatch setting" in lines[0]
    assert "did you mean CMDRDATA_CUSTOMER_ID?" in lines[0]


def test_launcher_refuses_a_bad_option_before_starting_anything(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()"
    result = run([*CMDRDATA_RUN, "--exporter", "kafka", sys.executable, "-c", code], clean_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "--exporter='kafka' must be one of http, jsonl, console, memory, none" in result.stderr
    assert not marker.exists()  # the program never started
    missing = tmp_path / "no-such-dir" / "usage.jsonl"
    result = run(
        [*CMDRDATA_RUN, "--jsonl-path", str(missing), sys.executable, "-c", code], clean_env(tmp_path)
    )
    assert result.returncode == 2 and "does not exist" in result.stderr and not marker.exists()
    result = run([*CMDRDATA_RUN, "--endpoint", "http://example.com/x", "true"], clean_env(tmp_path))
    assert result.returncode == 2 and "--endpoint=" in result.stderr


def test_missing_command_exits_127(tmp_path: Path) -> None:
    result = run([*CMDRDATA_RUN, "no-such-command-cmdrdata-test"], clean_env(tmp_path))
    assert result.returncode == 127
    assert result.stderr.strip().count("\n") == 0 and "command not found" in result.stderr
    result = run([*CMDRDATA_RUN], clean_env(tmp_path))
    assert result.returncode == 127
    assert "no command given" in result.stderr
    result = run([*CMDRDATA_RUN, str(tmp_path / "missing.sh")], clean_env(tmp_path))
    assert result.returncode == 127


def test_not_executable_exits_126(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = run([*CMDRDATA_RUN, str(script)], clean_env(tmp_path))
    assert result.returncode == 126, result.stderr


def test_exit_status_and_arguments_are_the_programs_own(tmp_path: Path) -> None:
    code = "import sys; print(sys.argv[1:]); sys.exit(7)"
    result = run([*CMDRDATA_RUN, sys.executable, "-c", code, "--help", "x y"], clean_env(tmp_path))
    assert result.returncode == 7
    assert "['--help', 'x y']" in result.stdout


def test_sitecustomize_example(tmp_path: Path) -> None:
    env = clean_env(tmp_path, PYTHONPATH=str(REPO_ROOT / "sitecustomize_example"))
    result = run([sys.executable, str(CHAT_APP)], env)
    assert result.returncode == 0, result.stderr
    assert "tracked=True" in result.stdout
    assert_one_chat_event(tmp_path)
    result = run([sys.executable, str(CHAT_APP)], {**env, "CMDRDATA_QUEUE_SIZE": "-3"})
    assert result.returncode == 0
    assert "CMDRDATA_QUEUE_SIZE" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------ the .pth route


def require_installed_pth() -> None:
    """The .pth route needs the package installed (wheel or editable); CI installs it, so CI must not skip."""
    if installed_pth_files():
        return
    reason = (
        f"{PTH_NAME} is not installed in this interpreter's site-packages ({sys.executable}); "
        "install the package (pip install -e '.[test]') to test the zero-code .pth route"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def test_pth_route_patches_with_the_environment_flag(tmp_path: Path) -> None:
    require_installed_pth()
    result = run([sys.executable, str(CHAT_APP)], clean_env(tmp_path, CMDRDATA_AUTOPATCH="1"))
    assert result.returncode == 0, result.stderr
    assert "tracked=True" in result.stdout
    assert_one_chat_event(tmp_path)


def test_pth_route_costs_nothing_without_the_flag(tmp_path: Path) -> None:
    require_installed_pth()
    probe = (
        "import sys; print(sorted(m for m in ('cmdrdata_autopatch', 'openai', 'wrapt') if m in sys.modules))"
    )
    result = run([sys.executable, "-c", probe], clean_env(tmp_path))
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    result = run([sys.executable, str(CHAT_APP)], clean_env(tmp_path))
    assert "tracked=False" in result.stdout
    assert events(tmp_path) == []


def test_pth_route_disabled_wins(tmp_path: Path) -> None:
    require_installed_pth()
    env = clean_env(tmp_path, CMDRDATA_AUTOPATCH="1", CMDRDATA_DISABLED="1")
    probe = "import sys; print('ours-imported', 'cmdrdata_autopatch' in sys.modules)"
    result = run([sys.executable, "-c", probe], env)
    assert "ours-imported False" in result.stdout
    result = run([sys.executable, str(CHAT_APP)], env)
    assert "tracked=False" in result.stdout and events(tmp_path) == []


def test_pth_route_warns_about_a_flag_that_is_neither_yes_nor_no(tmp_path: Path) -> None:
    require_installed_pth()
    result = run([sys.executable, str(CHAT_APP)], clean_env(tmp_path, CMDRDATA_AUTOPATCH="ture"))
    assert result.returncode == 0 and "tracked=False" in result.stdout, result.stderr
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "CMDRDATA_AUTOPATCH='ture'" in lines[0] and "did you mean 'true'?" in lines[0]
    assert events(tmp_path) == []
    result = run([sys.executable, str(CHAT_APP)], clean_env(tmp_path, CMDRDATA_AUTOPATCH="0"))
    assert warning_lines(result.stderr) == [] and "tracked=False" in result.stdout


def test_pth_route_names_the_variable_not_the_mechanism(tmp_path: Path) -> None:
    require_installed_pth()
    env = clean_env(tmp_path, CMDRDATA_AUTOPATCH="1", CMDRDATA_CUSTOMER_ID="bad\ncustomer")
    result = run([sys.executable, str(CHAT_APP)], env)
    lines = warning_lines(result.stderr)
    assert len(lines) == 1 and "switched on by CMDRDATA_AUTOPATCH=1" in lines[0], result.stderr
    assert "pth" not in lines[0]


def test_pth_file_is_the_one_in_the_repo() -> None:
    require_installed_pth()
    shipped = (REPO_ROOT / PTH_NAME).read_text()
    assert any(Path(p).read_text() == shipped for p in installed_pth_files())
    assert len(shipped.strip().splitlines()) == 1 and shipped.startswith("import os;")


def test_bootstrap_dir_holds_only_our_sitecustomize() -> None:
    names = {n for n in os.listdir(bootstrap_dir()) if n.endswith(".py")}
    assert names == {"__init__.py", "sitecustomize.py"}
