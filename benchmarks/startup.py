"""What importing cmdrdata-autopatch and calling `patch()` add to a program's start-up.

Three measurements, each in fresh subprocesses (start-up cost only exists once per process), repeated many
times with the A and B commands alternating, reporting medians (and the median of the paired A/B
differences, so that drift in the machine's speed during the run cancels out):

1. `import openai` vs `import openai` + `import cmdrdata_autopatch; cmdrdata_autopatch.patch(...)`: the
   time is taken inside the child with `perf_counter` (no interpreter start noise), plus the wall time of the
   whole child, plus one `-X importtime` run to name what our import pulls in. Also listed: which
   `openai.resources.*` modules are loaded in each case — `patch()` must load none the application does not
   use itself (it hooks resource modules and wraps them when the application imports them).
2. The same for an application that uses one resource (`client.chat.completions`), to show the resource it
   uses is wrapped when it loads and nothing else is imported.
3. `python -c pass` in a throwaway virtualenv with our wheel installed (so `cmdrdata_autopatch.pth` sits in
   site-packages) but `CMDRDATA_AUTOPATCH` unset, vs an identical virtualenv without our package; plus the
   cost of processing our `.pth` line alone (`site.addpackage`, timed in-process), which is what the
   wall-time difference should be made of.

Run: `python benchmarks/startup.py [--quick] [--json] [--write-docs]` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, env_line, environment, eprint, median, table, verdict, write_docs_section

TARGET_PATCH_MS = 10.0
TARGET_PTH_MS = 1.0
PTH_NAME = "cmdrdata_autopatch.pth"

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import openai
t1 = time.perf_counter()
{ours}
t2 = time.perf_counter()
{app}
t3 = time.perf_counter()
print(json.dumps({{
    "openai_ms": (t1 - t0) * 1e3,
    "ours_ms": (t2 - t1) * 1e3,
    "app_ms": (t3 - t2) * 1e3,
    "resources": sorted(m for m in sys.modules if m.startswith("openai.resources")),
    "ours_modules": sorted(m for m in sys.modules if m.startswith("cmdrdata_autopatch")),
    "patched": {patched},
}}))
"""

OURS = {
    "none": "",
    "memory": "import cmdrdata_autopatch\ncmdrdata_autopatch.patch(exporter='memory')",
    "default": "import cmdrdata_autopatch\ncmdrdata_autopatch.patch()",
}
APPS = {
    "import only": "",
    "app uses chat": "client = openai.OpenAI(api_key='sk-x')\nclient.chat.completions",
}


def clean_env() -> dict[str, str]:
    """The environment without any CMDRDATA_* variable (no zero-code activation, default settings).

    PYTHONDONTWRITEBYTECODE is dropped too: an installed package has its bytecode cached (pip compiles
    at install), and without the cache every run would measure compiling our sources and openai's, not
    importing them (about 25 ms of ours and most of `import openai` on this machine).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDRDATA_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["CMDRDATA_JSONL_PATH"] = os.devnull  # patch() with the default exporter writes nothing anywhere
    return env


def probe_code(ours: str, app: str) -> str:
    patched = (
        "[k for k, v in __import__('cmdrdata_autopatch').patching._registry.applied.items()]"
        if ours != "none"
        else "[]"
    )
    return PROBE.format(ours=OURS[ours], app=APPS[app], patched=patched)


def run_probe(python: str, code: str, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, check=True)
    wall = (time.perf_counter() - t0) * 1e3
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def importtime(python: str, code: str, env: dict[str, str]) -> list[tuple[str, float, float]]:
    """(module, self ms, cumulative ms) for every module `code` imports, from `-X importtime`."""
    out = subprocess.run([python, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env)
    rows = []
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((m.group(4), int(m.group(1)) / 1e3, int(m.group(2)) / 1e3))
    return rows


def measure_imports(reps: int) -> dict[str, Any]:
    env = clean_env()
    python = sys.executable
    results: dict[str, Any] = {}
    for app in APPS:
        base = probe_code("none", app)
        case: dict[str, Any] = {}
        for ours in ("memory", "default"):
            code = probe_code(ours, app)
            run_probe(python, base, env)  # warm the page cache for both
            run_probe(python, code, env)
            a_wall, b_wall, a_openai, b_ours, b_openai, diffs = [], [], [], [], [], []
            a_info: dict[str, Any] = {}
            b_info: dict[str, Any] = {}
            for i in range(reps):
                order = [(base, "a"), (code, "b")] if i % 2 == 0 else [(code, "b"), (base, "a")]
                walls: dict[str, float] = {}
                for c, tag in order:
                    info, wall = run_probe(python, c, env)
                    walls[tag] = wall
                    if tag == "a":
                        a_info = info
                        a_openai.append(info["openai_ms"])
                    else:
                        b_info = info
                        b_openai.append(info["openai_ms"])
                        b_ours.append(info["ours_ms"] + info["app_ms"])
                a_wall.append(walls["a"])
                b_wall.append(walls["b"])
                diffs.append(walls["b"] - walls["a"])
            extra_resources = sorted(set(b_info["resources"]) - set(a_info["resources"]))
            case[ours] = {
                "openai_import_ms": median(a_openai),
                "ours_ms": median(b_ours),  # import cmdrdata_autopatch + patch() (+ the app's own step)
                "wall_a_ms": median(a_wall),
                "wall_b_ms": median(b_wall),
                "wall_diff_ms": median(diffs),
                "resources_app": a_info["resources"],
                "resources_with_patch": b_info["resources"],
                "resources_added_by_patch": extra_resources,
                "patched_methods": b_info["patched"],
                "our_modules": b_info["ours_modules"],
            }
            if app != "import only":
                # the app step alone, without us, to separate it from our cost
                base_app = [run_probe(python, base, env)[0]["app_ms"] for _ in range(max(5, reps // 3))]
                case[ours]["app_step_bare_ms"] = median(base_app)
        results[app] = case
    # what our import pulls in, by module (one -X importtime run after a warm-up)
    code = probe_code("memory", "import only")
    importtime(python, code, env)
    rows = importtime(python, code, env)
    base_mods = {r[0] for r in importtime(python, probe_code("none", "import only"), env)}
    ours_rows = [r for r in rows if r[0] not in base_mods]
    top = next((r for r in rows if r[0] == "cmdrdata_autopatch"), None)
    results["importtime"] = {
        "cmdrdata_autopatch_cumulative_ms": top[2] if top else None,
        "new_modules": [{"module": m, "self_ms": s, "cumulative_ms": c} for m, s, c in ours_rows],
    }
    return results


# --- the .pth line -------------------------------------------------------------------------------------


def uv() -> Optional[str]:
    return shutil.which("uv")


def make_venvs(base: Path, rebuild: bool) -> tuple[Path, Path, str]:
    """Two identical virtualenvs (same Python, openai, wrapt, httpx); only `with` has our wheel."""
    import openai

    tool = uv()
    if tool is None:
        raise RuntimeError("uv is needed to build the throwaway virtualenvs (pip install uv)")
    deps = [f"openai=={openai.__version__}", "wrapt", "httpx"]
    made = []
    for name in ("without", "with"):
        venv = base / name
        python = venv / "bin" / "python"
        if rebuild and venv.exists():
            shutil.rmtree(venv)
        if not python.exists():
            subprocess.run([tool, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
            subprocess.run([tool, "pip", "install", "-q", "--python", str(python), *deps], check=True)
            if name == "with":  # a real (non-editable) wheel install, as users get it
                subprocess.run(
                    [
                        tool,
                        "pip",
                        "install",
                        "-q",
                        "--no-deps",
                        "--reinstall",
                        "--python",
                        str(python),
                        str(ROOT),
                    ],
                    check=True,
                )
        made.append(venv)
    site = subprocess.run(
        [str(made[1] / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return made[0], made[1], site


def measure_pth(base: Path, reps: int, rebuild: bool) -> dict[str, Any]:
    if not (ROOT / PTH_NAME).exists():
        return {"status": f"{PTH_NAME} is not in the repository yet: not measured"}
    without, with_, site = make_venvs(base, rebuild)
    pth = Path(site) / PTH_NAME
    if not pth.exists():
        return {"status": f"the wheel did not install {PTH_NAME} into {site}: not measured"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDRDATA_")}
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode cached (see clean_env)
    py_a, py_b = str(without / "bin" / "python"), str(with_ / "bin" / "python")
    for _ in range(20):  # warm-up
        subprocess.run([py_a, "-c", "pass"], env=env, check=True)
        subprocess.run([py_b, "-c", "pass"], env=env, check=True)
    a, b, diffs = [], [], []
    for i in range(reps):
        walls = {}
        for py in (py_a, py_b) if i % 2 == 0 else (py_b, py_a):
            t0 = time.perf_counter()
            subprocess.run([py, "-c", "pass"], env=env, check=True)
            walls[py] = (time.perf_counter() - t0) * 1e3
        a.append(walls[py_a])
        b.append(walls[py_b])
        diffs.append(walls[py_b] - walls[py_a])
    # the .pth line alone: site.addpackage reads the file and executes its one line
    line_code = (
        "import site, timeit\n"
        f"n = 20000\nt = timeit.timeit(lambda: site.addpackage({site!r}, {PTH_NAME!r}, set()), number=n)\n"
        "print(t / n * 1e6)"
    )
    line_us = float(
        subprocess.run([py_b, "-c", line_code], capture_output=True, text=True, env=env, check=True).stdout
    )
    imported = subprocess.run(
        [py_b, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, env=env
    ).stderr
    ours_loaded = sorted({m for m in re.findall(r"\|\s+(cmdrdata\S*)", imported)})
    return {
        "status": "measured",
        "pth_path": str(pth),
        "pth_line": pth.read_text().strip(),
        "bare_start_without_ms": median(a),
        "bare_start_with_ms": median(b),
        "paired_diff_ms": median(diffs),
        "pth_line_us": line_us,
        "our_modules_imported_at_start": ours_loaded,
        "reps": reps,
    }


# --- reporting -----------------------------------------------------------------------------------------


def checks(imports: dict[str, Any], pth: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for app in APPS:
        case = imports[app]["memory"]
        added = case["ours_ms"] - case.get("app_step_bare_ms", 0.0)
        out.append(
            {
                "target": f"{app}: import cmdrdata_autopatch + patch() <= {TARGET_PATCH_MS:g} ms on top of "
                "import openai",
                "measured": f"{added:.2f} ms in-process (wall, paired: {case['wall_diff_ms']:+.2f} ms)",
                "ok": added <= TARGET_PATCH_MS,
            }
        )
        extra = case["resources_added_by_patch"]
        out.append(
            {
                "target": f"{app}: patch() imports no openai resource module the app does not use",
                "measured": "none" if not extra else ", ".join(extra),
                "ok": not extra,
            }
        )
    if pth.get("status") == "measured":
        out.append(
            {
                "target": f"`.pth` with CMDRDATA_AUTOPATCH unset <= {TARGET_PTH_MS:g} ms of start-up",
                "measured": f"{pth['paired_diff_ms']:+.2f} ms wall (paired median); the line itself "
                f"{pth['pth_line_us']:.1f} us",
                "ok": pth["paired_diff_ms"] <= TARGET_PTH_MS and pth["pth_line_us"] <= TARGET_PTH_MS * 1e3,
            }
        )
    return out


def render(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    imports = doc["imports"]
    lines = [
        f"## Start-up, openai {env['openai']}",
        "",
        f"Measured {env_line(env)}.",
        f"Command: `{doc['command']}`; {doc['reps']} alternating runs of each child, medians.",
        "",
    ]
    rows = []
    for app in APPS:
        for ours in ("memory", "default"):
            c = imports[app][ours]
            label = "patch(exporter='memory')" if ours == "memory" else "patch() (default exporter)"
            app_bare = c.get("app_step_bare_ms")
            rows.append(
                [
                    app,
                    label,
                    f"{c['openai_import_ms']:.1f}",
                    f"{c['ours_ms']:.2f}" + ("" if app_bare is None else f" (app step alone {app_bare:.2f})"),
                    f"{c['wall_a_ms']:.1f} / {c['wall_b_ms']:.1f}",
                    f"{c['wall_diff_ms']:+.2f}",
                    ", ".join(m.replace("openai.resources.", "") for m in c["resources_app"]) or "none",
                    ", ".join(c["resources_added_by_patch"]) or "none",
                ]
            )
    lines += [
        table(
            [
                "application",
                "ours",
                "import openai ms",
                "import ours + patch() ms (in-process)",
                "child wall ms without / with",
                "wall diff ms (paired)",
                "resource modules the app loads",
                "added by patch()",
            ],
            rows,
        ),
        "",
    ]
    it = imports["importtime"]
    top = sorted(it["new_modules"], key=lambda r: -r["self_ms"])[:12]
    lines += [
        f"`-X importtime`: `cmdrdata_autopatch` cumulative {it['cmdrdata_autopatch_cumulative_ms']} ms; "
        "modules loaded by `import cmdrdata_autopatch; patch(exporter='memory')` that `import openai` "
        f"had not loaded ({len(it['new_modules'])}), largest self time first: "
        + ", ".join(f"{r['module']} {r['self_ms']:.2f}" for r in top),
        "",
    ]
    pth = doc["pth"]
    if pth.get("status") == "measured":
        lines += [
            table(
                ["interpreter start (`python -c pass`)", "ms"],
                [
                    ["venv without cmdrdata-autopatch", f"{pth['bare_start_without_ms']:.2f}"],
                    [
                        "venv with it (`.pth` installed, CMDRDATA_AUTOPATCH unset)",
                        f"{pth['bare_start_with_ms']:.2f}",
                    ],
                    ["paired difference (median)", f"{pth['paired_diff_ms']:+.3f}"],
                    [
                        "the `.pth` line alone (`site.addpackage`, in-process)",
                        f"{pth['pth_line_us'] / 1e3:.4f}",
                    ],
                ],
            ),
            "",
            f"Our modules imported at start with the variable unset: "
            f"{', '.join(pth['our_modules_imported_at_start']) or 'none'}.",
            "",
        ]
    else:
        lines += [f"`.pth` start-up cost: {pth.get('status')}", ""]
    lines.append(
        table(
            ["target", "measured", "result"],
            [[c["target"], c["measured"], verdict(c["ok"])] for c in doc["checks"]],
        )
    )
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--reps", type=int, default=None, help="alternating child runs per comparison")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument(
        "--write-docs", action="store_true", help="update this section of docs/performance.md"
    )
    parser.add_argument(
        "--venv-dir", default="/tmp/cmdrdata-bench-startup", help="where the throwaway venvs go"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the throwaway venvs")
    parser.add_argument("--no-pth", action="store_true", help="skip the .pth measurement (no venvs)")
    args = parser.parse_args(argv)

    reps = args.reps or (10 if args.quick else 40)
    eprint(f"[startup] import openai vs + patch(): {reps} alternating runs per case")
    imports = measure_imports(reps)
    if args.no_pth:
        pth: dict[str, Any] = {"status": "skipped (--no-pth)"}
    else:
        eprint("[startup] bare interpreter start with and without our .pth")
        try:
            pth = measure_pth(Path(args.venv_dir), reps * 5, args.rebuild)
        except Exception as exc:
            pth = {"status": f"not measured: {type(exc).__name__}: {exc}"}
    doc: dict[str, Any] = {
        "benchmark": "startup",
        "command": "python benchmarks/startup.py" + (" --quick" if args.quick else ""),
        "environment": environment(),
        "reps": reps,
        "imports": imports,
        "pth": pth,
    }
    doc["checks"] = checks(imports, pth)
    text = render(doc)
    print(json.dumps(doc, indent=2) if args.json else text)
    for check in doc["checks"]:
        eprint(f"{verdict(check['ok'])}: {check['target']} (measured {check['measured']})")
    if args.write_docs:
        write_docs_section("startup", text)
        eprint("[startup] wrote section startup of docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
