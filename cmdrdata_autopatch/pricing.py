"""An estimated cost per event from the `genai-prices` package's maintained price table (the `prices` extra).

We keep no price list of our own: prices change monthly and a stale copy would bill wrongly with authority.
`genai-prices` (Python >= 3.11) is optional; without it `load_prices()` returns None and the report simply
has no cost column. With it, each event is priced at the time of its call with: the cached-input
discount (`cached_input_tokens` as cache reads), audio tokens when the reported usage names them, the service
tier the response named (`flex`, `priority`) and Batch API work (`service_tier: batch` or `api: batches`) as
genai-prices' price variants, and tool fees from `units` (web and file searches, speech characters, audio
seconds).
A model the table does not know gets no cost (never a guess), and the report says which models those were.
Every number here is an estimate: the footer says so, and the CmdrData API is where billing is decided.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Optional

from .report_query import parse_timestamp

EXTRA_HINT = "pip install 'cmdrdata-autopatch[prices]' (Python >= 3.11) for an estimated cost column"
# our api name -> the genai-prices extractor flavour that reads its reported usage object
_FLAVORS = {
    "chat.completions": "chat",
    "completions": "chat",
    "embeddings": "embeddings",
    "responses": "responses",
    "responses.compact": "responses",
}
# our `units` keys -> genai-prices usage keys (tool fees and non-token units)
_UNIT_KEYS = {
    "web_searches": "web_searches",
    "file_searches": "storage_searches",
    "characters": "input_characters",
    "audio_seconds": "audio_seconds",
}
_TIERS = {"flex", "priority"}  # tiers with their own rates; `default`, `auto`, `scale` are standard prices
_PROVIDERS = {"openai": "openai", "azure": "azure"}


def format_cost(value: Decimal | float) -> str:
    """A cost for a person: 4 decimals, more for a fraction of a cent so a small call never reads as 0."""
    amount = float(value)
    if amount == 0:
        return "0"
    places = max(4, min(10, 1 - math.floor(math.log10(abs(amount)))))
    return f"{amount:,.{places}f}"


def _count(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        return 0
    return value


@dataclass
class PriceTable:
    """genai-prices' table as the report uses it: the cost of one event, and what could not be priced."""

    module: Any
    version: str
    auto_updated_at: Optional[datetime]
    newest_price_date: Optional[date]
    unknown_models: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    # (model, provider) pairs the table does not know: genai-prices does not cache a failed lookup
    _misses: set[tuple[str, Optional[str]]] = field(default_factory=set)

    def describe(self) -> str:
        """Which snapshot priced the report: genai-prices ships one table per release and dates none."""
        if self.auto_updated_at is not None:
            return f"genai-prices {self.version}, price table fetched {self.auto_updated_at:%Y-%m-%d %H:%M}"
        text = f"genai-prices {self.version}'s bundled price table"
        if self.newest_price_date is not None:
            text += f" (its latest price change: {self.newest_price_date:%Y-%m-%d})"
        return text

    def snapshot_json(self) -> dict[str, Any]:
        return {
            "source": "genai-prices",
            "version": self.version,
            "snapshot": "fetched" if self.auto_updated_at is not None else "bundled",
            "fetched_at": None if self.auto_updated_at is None else self.auto_updated_at.isoformat(),
            "newest_price_date": None
            if self.newest_price_date is None
            else self.newest_price_date.isoformat(),
        }

    def cost(self, event: Mapping[str, Any]) -> Decimal | None:
        """The event's estimated cost in USD; None when the table has no price for its model."""
        model = event.get("model")
        if not isinstance(model, str) or not model:
            self.unknown_models["(unknown)"] = self.unknown_models.get("(unknown)", 0) + 1
            return None
        provider = event.get("provider")
        lookup = (model, provider if isinstance(provider, str) else None)
        if lookup in self._misses:
            self.unknown_models[model] += 1
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self._calc(event, model, _PROVIDERS.get(lookup[1] or ""))
        except LookupError:
            self._misses.add(lookup)
            self.unknown_models[model] = self.unknown_models.get(model, 0) + 1
            return None
        except Exception:  # a damaged event or a genai-prices bug: no price for this row, said in the footer
            self.errors += 1
            return None

    def _calc(self, event: Mapping[str, Any], model: str, provider: str | None) -> Decimal:
        """Price with the event's provider: OpenAI or Azure by id, another host by its API address.

        A host genai-prices does not know (a company gateway, a local server) is priced by the model name
        alone, which finds OpenAI's prices for OpenAI's models and nothing for the rest.
        """
        usage = self._usage(event, model)
        when = parse_timestamp(event.get("timestamp"))
        context = _context(event)
        calc = self.module.calc_price
        if provider is None and isinstance(event.get("provider"), str) and "." in event["provider"]:
            try:
                found = calc(
                    usage,
                    model,
                    provider_api_url=f"https://{event['provider']}",
                    genai_request_timestamp=when,
                    price_context=context,
                )
                return Decimal(found.total_price)
            except LookupError:
                pass
        found = calc(usage, model, provider_id=provider, genai_request_timestamp=when, price_context=context)
        return Decimal(found.total_price)

    def _usage(self, event: Mapping[str, Any], model: str) -> Any:
        usage_cls = self.module.Usage
        usage = None
        details = event.get("usage_details")
        flavor = _FLAVORS.get(str(event.get("api")))
        if isinstance(details, dict) and flavor and event.get("usage_source") == "reported":
            try:  # genai-prices' own reading of OpenAI's usage object: audio and cache splits included
                usage = self.module.extract_usage(
                    {"model": model, "usage": details}, provider_id="openai", api_flavor=flavor
                ).usage
            except Exception:
                usage = None
        if usage is None:
            inp = _count(event.get("input_tokens"))
            usage = usage_cls(
                input_tokens=inp,
                output_tokens=_count(event.get("output_tokens")),
                cache_read_tokens=min(_count(event.get("cached_input_tokens")), inp),
            )
        units = event.get("units")
        if isinstance(units, dict):
            extra = {ours: _count(units.get(name)) for name, ours in _UNIT_KEYS.items()}
            extra = {key: value for key, value in extra.items() if value}
            if extra:
                usage = usage + usage_cls(**extra)
        return usage


def _context(event: Mapping[str, Any]) -> dict[str, str] | None:
    """genai-prices' price variant for the event: its service tier, or batch processing."""
    tier = event.get("service_tier")
    if tier == "batch" or event.get("api") == "batches":
        return {"processing": "batch"}
    if isinstance(tier, str) and tier in _TIERS:
        return {"service_tier": tier}
    return None


def _newest_price_date(module: Any) -> date | None:
    """The latest start date of any dated price in the table: the closest thing it has to its own date."""
    try:
        providers = module.data_snapshot.get_snapshot().providers
        starts = [
            getattr(getattr(entry, "constraint", None), "start_date", None)
            for provider in providers
            for model in provider.models
            for entry in [
                *(model.prices if isinstance(model.prices, list) else []),
                *(model.price_variants or []),
            ]
        ]
    except Exception:
        return None
    today = date.today()
    past = [d for d in starts if isinstance(d, date) and d <= today]
    return max(past) if past else None


def load_prices() -> PriceTable | None:
    """genai-prices' table when the extra is installed, else None (the report then shows no cost)."""
    try:
        import genai_prices
        from genai_prices import data_snapshot
    except Exception:  # not installed, Python < 3.11, or broken: the report works without costs
        return None
    snapshot = data_snapshot.get_snapshot()
    fetched = snapshot.timestamp if getattr(snapshot, "from_auto_update", False) else None
    return PriceTable(
        module=genai_prices,
        version=str(getattr(genai_prices, "__version__", "?")),
        auto_updated_at=fetched,
        newest_price_date=_newest_price_date(genai_prices),
    )
