"""Pages of server-side objects: every terminal batch a `list()` shows is billed once, on every page.

`batches.list()` returns its first page; iterating it (`for b in client.batches.list()`), or
`page.get_next_page()` / `page.iter_pages()`, fetches the next pages through the SDK client's own request
method, never through `Batches.list`, so the list row's wrapper alone would see the first page only. The
page it returns is therefore a transparent proxy (a `wrapt.ObjectProxy`: `isinstance` and every attribute
are the page's) that bills each page as it arrives: the page `list()` returned at once, the later ones
when iteration or the caller fetches them. The async twin does the same for the paginator `list()`
returns (awaited for its first page, or iterated with `async for`) and for the pages it yields.

Billing a page is `bill_object` on each item: only terminal objects with usage bill, each once (derived
id, `first_time`), however many times a page is listed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable

from .diagnostics import report_internal_error
from .object_billing import _Read, bill_object
from .streams import _Proxy
from .usage import get

Bill = Callable[[Any], None]


def page_biller(read: _Read) -> Bill:
    """Bills every object of one page; never raises."""

    def bill(page: Any) -> None:
        try:
            data = get(page, "data")
            for item in data if isinstance(data, list) else ():
                bill_object(read, item)
        except Exception as exc:
            report_internal_error("object page", exc)

    return bill


class BilledPage(_Proxy):
    """A sync page (already billed) whose later pages are billed as they are fetched."""

    def __init__(self, wrapped: Any, bill: Bill) -> None:
        super().__init__(wrapped)
        self._self_bill = bill

    def __iter__(self) -> Iterator[Any]:
        for page in self.iter_pages():  # the SDK's own loop, with each later page billed on arrival
            yield from page.__wrapped__._get_page_items()

    def iter_pages(self) -> Iterator[Any]:
        first = self.__wrapped__
        for page in first.iter_pages():
            if page is first:
                yield self
                continue
            self._self_bill(page)
            yield BilledPage(page, self._self_bill)

    def get_next_page(self) -> Any:
        page = self.__wrapped__.get_next_page()
        self._self_bill(page)
        return BilledPage(page, self._self_bill)


class AsyncBilledPage(_Proxy):
    """The async twin of `BilledPage`."""

    def __init__(self, wrapped: Any, bill: Bill) -> None:
        super().__init__(wrapped)
        self._self_bill = bill

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._self_items()

    async def _self_items(self) -> AsyncIterator[Any]:
        async for page in self.iter_pages():
            for item in page.__wrapped__._get_page_items():
                yield item

    async def iter_pages(self) -> AsyncIterator[Any]:
        first = self.__wrapped__
        async for page in first.iter_pages():
            if page is first:
                yield self
                continue
            self._self_bill(page)
            yield AsyncBilledPage(page, self._self_bill)

    async def get_next_page(self) -> Any:
        page = await self.__wrapped__.get_next_page()
        self._self_bill(page)
        return AsyncBilledPage(page, self._self_bill)


class AwaitedPages(_Proxy):
    """An async `list()` paginator: awaited, it gives the first page billed (and its later pages billed
    as fetched); iterated (`async for`), every page is billed as it arrives."""

    def __init__(self, wrapped: Any, bill: Bill) -> None:
        super().__init__(wrapped)
        self._self_bill = bill

    def __await__(self) -> Any:
        return self._self_first().__await__()

    async def _self_first(self) -> Any:
        page = await self.__wrapped__
        self._self_bill(page)
        return AsyncBilledPage(page, self._self_bill)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._self_items()

    async def _self_items(self) -> AsyncIterator[Any]:
        page = await self
        async for item in page:
            yield item
