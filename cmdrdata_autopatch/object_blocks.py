"""Helpers that reach object rows later or several times: their keywords become a `customer()` block.

Some SDK helpers take no keywords of ours and call object rows themselves: `runs.create_and_poll` calls
`runs.create` and then `runs.poll` (which reads `runs.retrieve`), `threads.create_and_run_poll` and
`runs.submit_tool_outputs_and_poll` likewise, `runs.poll` reads `retrieve` until the run is terminal; and
`beta.agents.sessions.stream()` returns a manager that opens `sessions.events.stream` when entered. Each
inner call is billed by its own row; the helper's row (role "block") only takes `customer_id=` /
`cmdrdata_metadata=` / `track_usage=` off and applies them to the inner calls: the helper runs (a
manager is entered) inside `customer(customer_id, **metadata)`, which every inner row reads as the
block's customer, or inside the nesting guard for `track_usage=False` (nothing inside is billed). The
`async` helpers get their block inside the coroutine, where the inner calls run.

Without any of our keywords the helper is called untouched (the caller's own blocks apply as usual) and
the caller gets exactly what the SDK returned. With them, a manager is returned as a transparent proxy
(`wrapt.ObjectProxy`) whose `__enter__` / `__aenter__` run inside the block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Callable

from .attribution import take_our_kwargs
from .context import customer
from .streams import _Proxy
from .wrappers import inside_call

Wrapper = Callable[..., Any]
Block = Callable[[], Any]  # a fresh context manager per use


@contextlib.contextmanager
def _untracked() -> Iterator[None]:
    token = inside_call.set(True)
    try:
        yield
    finally:
        inside_call.reset(token)


def _block_of(kwargs: dict[str, Any]) -> Block | None:
    """The block our keywords ask for (None: none given). ValueError on a bad value: the caller's."""
    customer_id, metadata, track = take_our_kwargs(kwargs)
    if not track:
        return _untracked
    if customer_id is None and metadata is None:
        return None
    return lambda: customer(customer_id, **(metadata or {}))


class EnteredAs(_Proxy):
    """A helper's manager, entered inside the block its call asked for."""

    def __init__(self, wrapped: Any, block: Block) -> None:
        super().__init__(wrapped)
        self._self_block = block

    def __enter__(self) -> Any:
        with self._self_block():
            return self.__wrapped__.__enter__()

    def __exit__(self, *exc_info: Any) -> Any:
        return self.__wrapped__.__exit__(*exc_info)

    async def __aenter__(self) -> Any:
        with self._self_block():
            return await self.__wrapped__.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self.__wrapped__.__aexit__(*exc_info)


def _is_manager(result: Any) -> bool:
    kind = type(result)
    return hasattr(kind, "__enter__") or hasattr(kind, "__aenter__")


def make_block_wrappers() -> tuple[Wrapper, Wrapper]:
    """The (sync, async) wrappers of a role "block" row."""

    def sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        block = _block_of(kwargs)
        if block is None:
            return wrapped(*args, **kwargs)
        with block():
            result = wrapped(*args, **kwargs)
        return EnteredAs(result, block) if _is_manager(result) else result

    async def _awaited(block: Block, awaitable: Any) -> Any:
        with block():
            return await awaitable

    def async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        block = _block_of(kwargs)
        if block is None:
            return wrapped(*args, **kwargs)
        result = wrapped(*args, **kwargs)  # a coroutine (runs when awaited), or a manager
        if hasattr(result, "__await__"):
            return _awaited(block, result)
        return EnteredAs(result, block) if _is_manager(result) else result

    return sync_wrapper, async_wrapper
