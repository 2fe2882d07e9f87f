"""One registry for everything tied to the process: atexit, fork, multiprocessing children and signals.

Pipelines register here (weakly); the process-level hooks are installed once, whatever the number of
pipelines, and each runs every live pipeline's matching method.

- **atexit** runs the bounded exit drain. `multiprocessing` children leave through `os._exit`, which skips
  atexit, so in those children (and only there) a `multiprocessing.util.Finalize` runs it instead.
- **fork**: `os.register_at_fork` gives each pipeline a fresh start in the child (the pipelines also check
  the pid on `record()` for servers that fork from C without running the hooks).
- **SIGTERM / SIGINT** (`docker stop`, Kubernetes, systemd, `Pool.terminate()`, Ctrl-C): Python's default
  SIGTERM action kills the process without running atexit, which lost every queued event. Installed on the
  main thread when the first pipeline registers, our handler chains to what was there before:
  * a handler the application installed earlier runs instead of us and stays in charge (it usually exits
    through `sys.exit`, which runs atexit, hence the drain);
  * Python's default SIGINT handler raises `KeyboardInterrupt` as always (atexit drains);
  * otherwise (the default action) we drain, restore the default action and re-send the signal, so the
    process ends with exactly the status the signal would have given it.
  A server that installs its own handler later (uvicorn) replaces ours while it runs; uvicorn restores the
  handler it found (ours) after its graceful shutdown and re-raises the signal, which reaches our drain.
  `CMDRDATA_SIGNALS=off` leaves the signal handlers alone.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from types import FrameType
from typing import Any, Callable, Optional, Protocol, Union

Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]


class Drainable(Protocol):
    def exit_drain(self) -> None: ...

    def after_fork_child(self) -> None: ...


_pipelines: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_installed = False
_previous: dict[int, Handler] = {}
_mp_children = False
_ending = False  # an exit drain is running: a signal arriving meanwhile must not cut it short


def register(pipeline: Drainable) -> None:
    """Drain `pipeline` at exit and on SIGTERM/SIGINT, and reset it in forked children."""
    global _installed
    with _lock:
        _pipelines.add(pipeline)
        first = not _installed
        _installed = True
    if first:
        atexit.register(run_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    if not _previous:  # not yet installed (e.g. the first pipeline was made off the main thread)
        install_signal_handlers()
    _register_mp_after_fork()


def run_exit() -> None:
    """Run every live pipeline's exit drain (each runs at most once per process).

    While it runs, SIGTERM/SIGINT are left pending in effect: a `multiprocessing` worker that got its
    sentinel drains in its finalizer while the pool already sends SIGTERM, and dying then would lose what
    the drain was about to deliver. The process is ending anyway, within the exit budget.
    """
    global _ending
    was_ending, _ending = _ending, True
    try:
        for pipeline in list(_pipelines):
            pipeline.exit_drain()
    finally:
        _ending = was_ending


def _after_fork_in_child() -> None:
    global _lock, _ending
    _lock = threading.Lock()
    _ending = False
    for pipeline in list(_pipelines):
        try:
            pipeline.after_fork_child()
        except Exception:  # never break a fork
            pass


def _before_fork() -> None:
    _register_mp_after_fork()


def _register_mp_after_fork() -> None:
    """Have `multiprocessing` children (which exit with `os._exit`, skipping atexit) run the exit drain."""
    global _mp_children
    if _mp_children or "multiprocessing.util" not in sys.modules:
        return
    try:
        import multiprocessing.util as mp_util

        mp_util.register_after_fork(run_exit, _in_mp_child)
        _mp_children = True
    except Exception:
        pass


def _in_mp_child(_: object) -> None:
    import multiprocessing.util as mp_util

    mp_util.Finalize(None, run_exit, exitpriority=100)


def install_signal_handlers() -> None:
    """Chain our drain into SIGTERM and SIGINT (main thread only; see the module docstring)."""
    if os.environ.get("CMDRDATA_SIGNALS", "").strip().lower() in ("off", "0", "false", "no"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            current = signal.getsignal(signum)
            if current is _on_signal or current == signal.SIG_IGN:
                continue
            _previous[signum] = current
            signal.signal(signum, _on_signal)
        except (ValueError, OSError, RuntimeError):  # not the main interpreter, or a restricted runtime
            continue


def _on_signal(signum: int, frame: Optional[FrameType]) -> Any:
    previous = _previous.get(signum)
    if callable(previous):
        return previous(signum, frame)  # the application's handler (or Python's SIGINT one) decides
    if previous == signal.SIG_IGN or _ending:
        return None  # an exit drain is running (this handler runs nested in it): let it finish
    try:
        run_exit()
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # end the way the signal would have ended us
    return None


def block_signals_in_this_thread() -> None:
    """Called first by each of our threads: SIGTERM/SIGINT must reach the main thread, never ours.

    A process-directed signal goes to any thread that does not block it. Delivered to one of our threads,
    it would not interrupt the main thread's blocking call (a lock, a queue `get`), so the Python handler
    would not run until that call returned, which in a `multiprocessing` worker can be never.
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is not None:
        try:
            mask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        except (OSError, ValueError):
            pass


def stderr_line(line: str) -> None:
    """Print one line on stderr, if there is a stderr (exit lines, notices)."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(line + "\n")
        stream.flush()
    except Exception:
        pass
