"""The wrapper alone, counted in CPU instructions: deterministic where timing on a shared machine is not.

Why this exists
---------------
`overhead.py`'s micro-benchmark times the wrapper alone (a few microseconds) in paired blocks; on a shared
2-core VM its ratio to the floor moves by ±30 % between runs (other tenants, frequency changes), too much to
tell a 0.2 µs change. Valgrind's `callgrind` counts the instructions a process executes, the same number on
every run of the same code. Each variant runs in a fresh child under valgrind twice, with N and N + 10,000
calls after the same warm-up; the difference / 10,000 is the instructions of one call, start-up cancelled.
Instructions are not time (a cache miss costs more than an add), but for pure-Python call paths like these
the ratios track the timed ratios closely (the first release: 2.08x by instructions, 2.16-2.19x timed).

Variants, all on the same tiny resource class whose `create()` returns a prebuilt `ChatCompletion`:

* `bare`: no wrapper;
* `dispatch`: a `wrapt.FunctionWrapper` that only calls through (what every wrapt-based tool pays);
* `floor`: `overhead.py`'s floor wrapper (reads three usage fields into a dict, puts it on a queue);
* `snapshot`: the least a wrapper can do under the exactness rule of issue 15, written as one flat
  function: the nesting guard, the customer context, wall and monotonic clocks, the usage copied
  (`copy_usage`), model and request id read, a slotted `UsageEvent` appended to a list; no service tier,
  no hosted-tool units, no drop-in client check, no error handling;
* `cmdrdata`: the wrapper `patch()` installs, with the memory exporter.

`--against DIR` also counts the `cmdrdata` variant of another checkout (e.g. a `git worktree` of an older
commit), so a change's cost reads in instructions.

Run: `python benchmarks/instructions.py [--against DIR ...] [--write-docs]` (needs `valgrind`; ~1 min per
variant).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VARIANTS = ("bare", "dispatch", "floor", "snapshot", "cmdrdata")
STEP = 10_000  # calls between the two counted runs
WARM = 2_000  # calls of both runs before the difference starts


def _snapshot_wrapper() -> Callable[..., Any]:
    """The `snapshot` variant: issue 15's minimum, flat (see the module docstring)."""
    import contextvars
    import time

    from cmdrdata_autopatch import context
    from cmdrdata_autopatch.events import UsageEvent
    from cmdrdata_autopatch.resolve import cached_provider_of
    from cmdrdata_autopatch.usage import copy_usage

    guard: contextvars.ContextVar[bool] = contextvars.ContextVar("snapshot_guard", default=False)
    get, set_, reset = guard.get, guard.set, guard.reset
    wall_clock, perf = time.time, time.perf_counter
    current = context.current_raw
    events: list[Any] = []
    slow = frozenset(("customer_id", "stream"))

    def snapshot(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not slow.isdisjoint(kwargs) or get():
            return wrapped(*args, **kwargs)
        ctx = current()
        token = set_(True)
        wall = wall_clock()
        start = perf()
        try:
            result = wrapped(*args, **kwargs)
        finally:
            reset(token)
        latency = perf() - start
        fields = result.__dict__
        event = UsageEvent("chat.completions", wall, latency, ctx[0], ctx[1], False, fields.get("model"))
        event.provider = cached_provider_of(instance._client)
        event.request_id = fields.get("_request_id")
        event.usage_details = copy_usage(fields.get("usage"))
        events.append(event)
        if len(events) > 1000:
            events.clear()
        return result

    return snapshot


def child(variant: str, calls: int) -> None:
    """Run `calls` calls of one variant (after the warm-up); valgrind counts the whole process."""
    import gc

    import openai
    import wrapt
    from openai.types.chat import ChatCompletion

    sys.path.insert(0, str(HERE))
    import overhead as ov
    from _common import MESSAGES, CannedOpenAI

    import cmdrdata_autopatch as cmdrdata

    prebuilt = ChatCompletion.model_validate(json.loads(CannedOpenAI().chat))
    client = openai.OpenAI(api_key="sk-bench")
    cls: Any = ov.TinyCompletions
    fn: Optional[Callable[..., Any]] = None
    if variant == "dispatch":
        fn = lambda wrapped, instance, args, kwargs: wrapped(*args, **kwargs)  # noqa: E731
    elif variant == "floor":
        fn = ov.floor_sync
    elif variant == "snapshot":
        fn = _snapshot_wrapper()
    elif variant == "cmdrdata":
        from cmdrdata_autopatch.wrappers import make_wrappers

        try:
            from cmdrdata_autopatch.runtime import RUNTIME

            fn = make_wrappers(ov._chat_target(), RUNTIME)[0]
        except ImportError:  # releases before the runtime object (one global state)
            fn = make_wrappers(ov._chat_target())[0]  # type: ignore[call-arg]
    if fn is not None:
        cls = type("Wrapped", (ov.TinyCompletions,), {"create": wrapt.FunctionWrapper(cls.create, fn)})
    cmdrdata.patch(exporter="memory")
    exporter = cmdrdata.get_exporter()
    obj = cls(client, prebuilt)
    for _ in range(WARM):
        obj.create(model="gpt-4o-mini", messages=MESSAGES)
    exporter.clear()
    gc.disable()  # a collection inside one run and not the other would not cancel
    for _ in range(calls):
        obj.create(model="gpt-4o-mini", messages=MESSAGES)


def count(variant: str, calls: int, checkout: Path) -> int:
    """Instructions executed by a child running `calls` calls of `variant` from `checkout`."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(checkout))
    out = subprocess.run(
        [
            *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
            *(sys.executable, __file__, "--child", variant, str(calls)),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    for line in out.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split(":")[-1].strip())
    raise RuntimeError(f"no instruction count from valgrind for {variant}: {out.stderr[-500:]}")


def per_call(variant: str, checkout: Path) -> float:
    return (count(variant, STEP, checkout) - count(variant, 0, checkout)) / STEP


def render(results: dict[str, float], against: dict[str, float]) -> str:
    bare, floor = results["bare"], results["floor"] - results["bare"]
    lines = [
        "## The wrapper alone, in instructions (valgrind callgrind)",
        "",
        f"Commit {_commit(ROOT)}; Python {sys.version.split()[0]}; instructions per call of the tiny class",
        "(deterministic: the same code counts the same on every run).",
        "Command: `python benchmarks/instructions.py --against <checkouts of f733378 and 8ec91a5>`.",
        "",
        "| variant | instructions per call | added over bare | x floor |",
        "|---|---|---|---|",
    ]
    rows = [(v, results[v]) for v in VARIANTS] + [(f"cmdrdata at {k}", n) for k, n in against.items()]
    for name, n in rows:
        added = n - bare
        ratio = f"{added / floor:.2f}" if name != "bare" else ""
        lines.append(f"| {name} | {n:,.0f} | {added:+,.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def _commit(path: Path) -> str:
    try:
        command = ["git", "-C", str(path), "rev-parse", "--short", "HEAD"]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", nargs="*", default=[], metavar="DIR", help="other checkouts to count")
    parser.add_argument("--write-docs", action="store_true", help="update its section of docs/performance.md")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("--from-json", default=None, metavar="FILE", help="render saved --json counts")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        return _emit(saved["here"], saved["against"], args)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: this benchmark counts instructions with callgrind", file=sys.stderr)
        return 2
    results = {v: per_call(v, ROOT) for v in VARIANTS}
    against = {f"{_commit(Path(d))}": per_call("cmdrdata", Path(d).resolve()) for d in args.against}
    return _emit(results, against, args)


def _emit(results: dict[str, float], against: dict[str, float], args: argparse.Namespace) -> int:
    markdown = render(results, against)
    print(json.dumps({"here": results, "against": against}) if args.json else markdown)
    if args.write_docs:
        sys.path.insert(0, str(HERE))
        from _common import write_docs_section

        write_docs_section("overhead-3-instructions", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
