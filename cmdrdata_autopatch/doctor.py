"""`cmdrdata-autopatch doctor`: is everything in place for OpenAI calls to be billed from this environment?

It answers the questions behind "nothing is recorded": is `openai` importable and recent enough, which table
rows patch on the installed release, is the configuration valid (key masked), where do events go and can
they get there, is the zero-code `.pth` route installed. Every finding is data first (`diagnose()`, printed
by `--json` for scripts) and text second. `problems` decide the exit code (0 none, 1 some, 2 bad option);
`warnings` are worth reading but not fatal.

It runs in its own short-lived process: resolving the patch table wraps the classes for real (without a
recorder, so nothing is sent), which is the only way to know that a row patches on this release.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._cmdline import (
    EXIT_OK,
    EXIT_PROBLEM,
    PTH_NAME,
    ArgumentParser,
    blocking_ancestor,
    bootstrap_dir,
    format_table,
    installed_pth_files,
    write_stdout,
)
from ._version import __version__

if TYPE_CHECKING:
    from .config import Settings

# the key of `replay.spool_backlog()`'s answer that counts events waiting in the spool
BACKLOG_COUNT_KEY = "events"


@dataclass
class Diagnosis:
    """What `doctor` found. `problems` decide the exit code; `warnings` are worth reading but not fatal."""

    data: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"ok": not self.problems, "problems": self.problems, "warnings": self.warnings, **self.data}


def _openai_facts(diag: Diagnosis) -> str | None:
    """Record the installed openai release and how it relates to the table; return its version if usable."""
    from .targets import OLDEST_SUPPORTED, VERIFIED_UP_TO, is_newer_than_verified, parse_version

    fix = f"pip install -U 'openai>={OLDEST_SUPPORTED}'"
    facts: dict[str, Any] = {"version": None, "verified_up_to": VERIFIED_UP_TO, "newer_than_verified": False}
    diag.data["openai"] = facts
    try:
        import openai
    except Exception as exc:
        diag.problems.append(f"openai cannot be imported ({type(exc).__name__}: {exc}); fix: {fix}")
        return None
    version = str(getattr(openai, "__version__", "0"))
    facts["version"] = version
    if parse_version(version) < parse_version(OLDEST_SUPPORTED):
        diag.problems.append(
            f"openai {version} is older than {OLDEST_SUPPORTED}; nothing is tracked; fix: {fix}"
        )
        return None
    if is_newer_than_verified(version):
        facts["newer_than_verified"] = True
        diag.warnings.append(
            f"openai {version} is newer than {VERIFIED_UP_TO}, the newest release the table was verified on; "
            "rows still open are tried, and any that did not resolve is listed below"
        )
    return version


def resolved_patch_rows() -> list[dict[str, Any]]:
    """Every table row's definitive status on the installed openai (`cmdrdata_autopatch.patch_status()` rows).

    The one place `doctor` reaches below the public face: the public `patch_status()` reports rows whose
    module is not imported yet as `pending`, and `patch()` would also start an exporter. Until the package
    offers "wrap without recording and import every in-range module" publicly, this uses `patching` directly.
    """
    import cmdrdata_autopatch as public

    from . import patching

    if not public.is_patched():
        patching.install()  # wrap the classes without a recorder: nothing is sent, the status is real
    patching.resolve_all_targets()
    rows: list[dict[str, Any]] = public.patch_status()
    return rows


def _target_facts(diag: Diagnosis) -> None:
    rows: list[dict[str, Any]] = []
    try:
        rows = resolved_patch_rows()
    except Exception as exc:
        diag.problems.append(f"resolving the patch table failed: {type(exc).__name__}: {exc}")
    diag.data["targets"] = rows
    for row in rows:
        if row["status"] == "missing":
            diag.problems.append(f"{row['module']}:{row['method']} is not patched: {row['detail']}")


def _settings_facts(diag: Diagnosis) -> Settings | None:
    from .config import ConfigError, environment_notes, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        diag.data["settings"] = None
        diag.data["settings_notes"] = environment_notes(os.environ)
        diag.warnings.extend(diag.data["settings_notes"])
        diag.problems.append(f"configuration: {exc}")
        return None
    diag.data["settings"] = settings.describe()
    diag.data["settings_notes"] = list(settings.notes)
    diag.warnings.extend(settings.notes)  # unknown names, yes/no typos, cosmetic values that fell back
    return settings


def jsonl_path_problem(path: str) -> str | None:
    """Why the jsonl exporter could not append to `path`, or None (its directory must exist)."""
    if os.path.isdir(path):
        return f"the jsonl exporter cannot write to {path}: it is a directory, not a file"
    blocker = blocking_ancestor(path)
    if blocker is not None:
        return f"the jsonl exporter cannot write to {path}: {blocker} is a file, not a directory"
    target = path
    if not os.path.exists(path):
        target = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(target):
            return f"the jsonl exporter cannot write to {path}: the directory {target} does not exist"
    if os.access(target, os.W_OK):
        return None
    return f"the jsonl exporter cannot write to {target} (not writable)"


def _destination(diag: Diagnosis, settings: Settings, name: str) -> str | None:
    """Where exporter `name` sends events (problems and warnings about it go into `diag`)."""
    if name == "http":
        return settings.endpoint
    if name == "jsonl":
        path = os.path.abspath(settings.jsonl_path)
        problem = jsonl_path_problem(path)
        if problem is not None:
            diag.problems.append(problem)
        if not settings.api_key:
            diag.warnings.append(
                "no CMDRDATA_API_KEY: events are kept locally in the JSONL file "
                "(see `cmdrdata-autopatch report`)"
            )
        return path
    if name == "console":
        return "stderr"
    if name == "otlp":
        return _otlp_facts(diag, settings)
    diag.warnings.append(f"exporter {name!r}: events are not delivered anywhere")
    return None


def _otlp_facts(diag: Diagnosis, settings: Settings) -> str:
    """Where OTLP goes (`data["otlp"]`): endpoint, protocol, whether headers are set. Header values hold
    API keys: only their names are shown."""
    from .otlp_settings import describe, missing

    info = describe(os.environ, settings.otlp_metrics)
    diag.data["otlp"] = info
    why = missing()
    if why is not None:
        diag.problems.append(why)
    if info["headers_set"] and _in_clear(info["endpoint"]):
        diag.warnings.append(
            f"OTLP headers ({', '.join(info['header_names'])}) go in clear text to {info['endpoint']}: "
            "use https:// for an endpoint beyond this machine"
        )
    if settings.otlp_metrics:
        diag.warnings.append(
            "CMDRDATA_OTLP_METRICS is on: the gen_ai.client.token.usage histogram carries the customer id "
            "as an attribute (one series per customer)"
        )
    return f"{info['endpoint']} ({info['protocol']})"


def _in_clear(url: str) -> bool:
    """Plain http:// to a host other than this machine (OTLP headers often hold API keys)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1")


def _exporter_facts(diag: Diagnosis, settings: Settings | None) -> None:
    diag.data["otlp"] = None
    if settings is None:
        diag.data["exporter"] = None
        return
    destinations = {name: _destination(diag, settings, name) for name in settings.exporters}
    info: dict[str, Any] = {"name": settings.exporter, "destination": destinations[settings.exporters[0]]}
    if len(destinations) > 1:
        info["destinations"] = destinations
    diag.data["exporter"] = info


def check_endpoint(endpoint: str, api_key: str, timeout: float) -> dict[str, Any]:
    """One GET to the events endpoint with the key: does it answer, and does it accept the key?

    A GET carries no event, so nothing is recorded or billed. Any HTTP answer proves the endpoint is
    reachable; 401/403 mean the key is refused, 5xx that the service is failing.
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        endpoint,
        method="GET",
        headers={
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"cmdrdata-autopatch/{__version__} doctor",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    except Exception as exc:
        from .diagnostics import redact

        reason = getattr(exc, "reason", exc)
        return {"checked": True, "ok": False, "status": None, "detail": redact(f"no answer: {reason}")}
    if status in (401, 403):
        detail, ok = f"answers, but refuses the API key ({status})", False
    elif status >= 500:
        detail, ok = f"answers with a server error ({status})", False
    else:
        detail, ok = f"answers ({status})", True
    return {"checked": True, "ok": ok, "status": status, "detail": detail}


def _endpoint_facts(diag: Diagnosis, settings: Settings | None, timeout: float, skip: bool) -> None:
    if settings is None or "http" not in settings.exporters or not settings.api_key:
        detail = "no http exporter"
    elif skip:
        detail = "skipped"
    else:
        result = check_endpoint(settings.endpoint, settings.api_key, timeout)
        diag.data["endpoint_check"] = result
        if not result["ok"]:
            diag.problems.append(f"endpoint {settings.endpoint}: {result['detail']}")
        return
    diag.data["endpoint_check"] = {"checked": False, "ok": None, "status": None, "detail": detail}


def spool_backlog(settings: Settings) -> dict[str, Any] | None:
    """What waits in the spool and when delivery last succeeded (`replay.spool_backlog`: events, bytes,
    segments, the oldest, the last successful delivery)."""
    from .replay import spool_backlog as backlog_of

    return dict(backlog_of(settings))


def delivery_facts(diag: Diagnosis, settings: Settings | None) -> None:
    """The spool backlog and the last successful delivery (`data["spool"]`), with a warning for a backlog."""
    if settings is None:
        diag.data["spool"] = None
        return
    try:
        backlog = spool_backlog(settings)
    except Exception as exc:
        from .diagnostics import redact

        diag.data["spool"] = None
        diag.warnings.append(redact(f"the spool could not be read: {type(exc).__name__}: {exc}"))
        return
    diag.data["spool"] = backlog
    waiting = (backlog or {}).get(BACKLOG_COUNT_KEY)
    if isinstance(waiting, int) and not isinstance(waiting, bool) and waiting > 0:
        diag.warnings.append(
            f"{waiting} event(s) wait in the spool for delivery (`cmdrdata-autopatch replay` sends them now)"
        )


def _activation_facts(diag: Diagnosis) -> None:
    import cmdrdata_autopatch as public

    pth = installed_pth_files()
    diag.data["activation"] = {
        "pth_files": pth,
        "bootstrap_dir": bootstrap_dir(),
        "CMDRDATA_AUTOPATCH": os.environ.get("CMDRDATA_AUTOPATCH"),
        "CMDRDATA_DISABLED": os.environ.get("CMDRDATA_DISABLED"),
        "patched_in_this_process": public.is_patched(),
    }
    if not pth:
        diag.warnings.append(
            f"{PTH_NAME} is not in this Python's site-packages: CMDRDATA_AUTOPATCH=1 alone does nothing here "
            "(use cmdrdata-run or patch(); reinstall the package to restore it)"
        )


def diagnose(timeout: float = 3.0, skip_endpoint: bool = False) -> Diagnosis:
    """Everything `doctor` reports, as data (used by `--json` and by the text output)."""
    diag = Diagnosis()
    diag.data["cmdrdata_autopatch"] = __version__
    diag.data["python"] = f"{sys.version.split()[0]} ({sys.executable})"
    if _openai_facts(diag) is not None:
        _target_facts(diag)
    else:
        diag.data["targets"] = []
    settings = _settings_facts(diag)
    _exporter_facts(diag, settings)
    _endpoint_facts(diag, settings, timeout, skip_endpoint)
    delivery_facts(diag, settings)
    _activation_facts(diag)
    return diag


def _spool_line(spool: dict[str, Any] | None) -> str:
    if spool is None:
        return "spool: not checked"
    return "spool: " + (", ".join(f"{key} {value}" for key, value in spool.items()) or "empty")


def _exporter_lines(data: dict[str, Any]) -> list[str]:
    """Where events go: one line per exporter, then the OTLP details (header names only)."""
    exporter = data["exporter"]
    if exporter is None:
        return []
    where = exporter.get("destinations") or {exporter["name"]: exporter["destination"]}
    lines = [f"exporter: {name} -> {destination}" for name, destination in where.items()]
    lines[0] = "\n" + lines[0]
    otlp = data.get("otlp")
    if otlp:
        headers = f"set ({', '.join(otlp['header_names'])})" if otlp["headers_set"] else "not set"
        details = f"compression {otlp['compression']}, timeout {otlp['timeout']} s"
        lines.append(f"otlp: headers {headers}, {details}")
        if otlp["metrics"]:
            lines.append(f"otlp metrics (gen_ai.client.token.usage) -> {otlp['metrics_endpoint']}")
    return lines


def render_text(diag: Diagnosis) -> str:
    """The findings for a person: versions, the patch table, configuration, destinations, then verdicts."""
    data = diag.data
    openai_info = data["openai"]
    newer = " (newer than verified)" if openai_info["newer_than_verified"] else ""
    lines = [
        f"cmdrdata-autopatch {data['cmdrdata_autopatch']} on Python {data['python']}",
        f"openai: {openai_info['version'] or 'not usable'}{newer}; "
        f"table verified up to {openai_info['verified_up_to']}",
    ]
    if data["targets"]:
        lines.append("\npatch table:")
        rows = [[f"{r['module']}:{r['method']}", r["api"], r["status"], r["detail"]] for r in data["targets"]]
        lines.extend(format_table(["target", "api", "status", "detail"], rows))
    lines.append("\nconfiguration:")
    if data["settings"] is None:
        lines.append("  (invalid, see problems)")
    else:
        lines.extend(f"  {key:<15} {value}" for key, value in data["settings"].items())
    lines.extend(_exporter_lines(data))
    lines.append(f"endpoint check: {data['endpoint_check']['detail']}")
    lines.append(_spool_line(data["spool"]))
    lines.append(f"zero-code .pth: {', '.join(data['activation']['pth_files']) or 'not installed'}")
    lines.extend(f"\nwarning: {warning}" for warning in diag.warnings)
    lines.extend(f"\nPROBLEM: {problem}" for problem in diag.problems)
    verdict = f"{len(diag.problems)} problem(s) found" if diag.problems else "OK: no problems found"
    lines.append(f"\n{verdict}")
    return "\n".join(lines) + "\n"


def doctor_main(argv: Sequence[str], prog: str) -> int:
    """`cmdrdata-autopatch doctor [--json] [--timeout S] [--no-network]`."""
    parser = ArgumentParser(
        prog=prog,
        description="Check the installation: openai version, patch table, configuration, exporter, endpoint.",
        epilog="Exit status: 0 no problem found (warnings allowed), 1 problems found, 2 bad option.",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as one JSON object")
    parser.add_argument("--timeout", type=float, default=3.0, help="endpoint check timeout in seconds (3)")
    parser.add_argument("--no-network", action="store_true", help="skip the endpoint check")
    args = parser.parse_args(list(argv))
    diag = diagnose(timeout=args.timeout, skip_endpoint=args.no_network)
    if args.json:
        write_stdout(json.dumps(diag.as_json(), indent=2, default=str) + "\n")
    else:
        write_stdout(render_text(diag))
    return EXIT_OK if not diag.problems else EXIT_PROBLEM
