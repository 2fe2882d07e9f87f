"""The estimated cost column: genai-prices' table applied to our events, and the report without it.

The expected numbers come from genai-prices itself, called with the usage each rule says an event stands
for (cached input as cache reads, the service tier or batch as a price variant, `units` as tool fees), so
the tests pin our mapping and stay right when the table's prices change; relations that hold whatever the
price (a cached token costs less, flex is half of standard on o3) are asserted too. The tests that need
genai-prices skip where it cannot be installed (Python < 3.11); the test without it runs everywhere.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime, timezone
from decimal import Decimal
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from cmdrdata_autopatch.pricing import PriceTable, load_prices

from .apps.harness import clean_env, run
from .report_helpers import REPORT, prose, wire, without_prices, write_jsonl

needs_prices = pytest.mark.skipif(find_spec("genai_prices") is None, reason="genai-prices not installed")
WHEN = "2026-11-20T12:00:00.000+00:00"  # after the dates genai-prices verified its tier and batch rates


def expected(model: str, context: dict[str, str] | None = None, **usage: int) -> Decimal:
    import genai_prices

    moment = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    calc = genai_prices.calc_price(
        genai_prices.Usage(**usage),
        model,
        provider_id="openai",
        genai_request_timestamp=moment,
        price_context=context,
    )
    return Decimal(calc.total_price)


def table() -> PriceTable:
    prices = load_prices()
    assert prices is not None
    return prices


def priced(**kw: Any) -> dict[str, Any]:
    base = wire("acme", "o3", 1_000_000, 1_000_000, timestamp=WHEN)
    base.update(kw)
    return base


@needs_prices
def test_cached_input_is_priced_at_the_cache_rate() -> None:
    prices = table()
    event = wire("acme", "gpt-4o", 1000, 200, cached=400, timestamp=WHEN)
    cost = prices.cost(event)
    assert cost == expected("gpt-4o", input_tokens=1000, cache_read_tokens=400, output_tokens=200)
    assert cost is not None and cost < expected("gpt-4o", input_tokens=1000, output_tokens=200)
    # the same call read from OpenAI's own usage object (usage_details) costs the same
    details = {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 400},
    }
    assert prices.cost({**event, "usage_details": details}) == cost


@needs_prices
def test_service_tiers_and_batch_are_price_variants() -> None:
    prices = table()
    standard = prices.cost(priced())
    flex = prices.cost(priced(service_tier="flex"))
    priority = prices.cost(priced(service_tier="priority"))
    assert standard is not None and flex is not None and priority is not None
    assert flex == standard / 2 and priority > standard
    assert prices.cost(priced(service_tier="default")) == standard
    batch = expected("o3", {"processing": "batch"}, input_tokens=1_000_000, output_tokens=1_000_000)
    assert prices.cost(priced(service_tier="batch")) == batch < standard
    assert prices.cost(priced(api="batches", service_tier="default")) == batch


@needs_prices
def test_tool_fees_from_units() -> None:
    prices = table()
    plain = wire("acme", "gpt-4o", 1000, 100, timestamp=WHEN)
    tools = {**plain, "units": {"web_searches": 3, "file_searches": 2, "images": 1}}
    fee = expected("gpt-4o", web_searches=3, storage_searches=2)
    assert fee > 0
    plain_cost, tools_cost = prices.cost(plain), prices.cost(tools)
    assert plain_cost is not None and tools_cost == plain_cost + fee
    speech = wire("acme", "tts-1", 0, 0, timestamp=WHEN, api="audio.speech", units={"characters": 2000})
    assert prices.cost(speech) == expected("tts-1", input_characters=2000) > 0


@needs_prices
def test_unknown_models_get_no_cost_and_are_named() -> None:
    prices = table()
    assert prices.cost(wire("acme", "my-local-llama", 10, 10, timestamp=WHEN)) is None
    assert prices.cost(wire("acme", "my-local-llama", 10, 10)) is None
    assert prices.cost({**wire("acme", "x", 1, 1), "model": None}) is None
    assert prices.unknown_models == {"my-local-llama": 2, "(unknown)": 1}
    damaged = {**wire("acme", "gpt-4o", 0, 0, timestamp=WHEN), "input_tokens": -5, "output_tokens": "many"}
    assert prices.cost(damaged) == 0  # counts of a wrong type count as zero, as in the token columns
    assert prices.describe().startswith(f"genai-prices {prices.version}")
    snapshot = prices.snapshot_json()
    assert snapshot["source"] == "genai-prices" and snapshot["snapshot"] == "bundled"


@needs_prices
def test_cost_column_in_every_format(tmp_path: Path) -> None:
    events = [
        wire("acme", "gpt-4o", 1000, 200, cached=400, timestamp=WHEN),
        wire("acme", "o3", 2000, 100, timestamp=WHEN, service_tier="flex"),
        wire("globex", "gpt-4o-mini", 5000, 500, timestamp="2026-11-21T08:00:00Z"),
        wire("globex", "my-local-llama", 10, 10, timestamp=WHEN),
    ]
    path = write_jsonl(tmp_path / "u.jsonl", events)
    env = clean_env(tmp_path)
    data = json.loads(run([*REPORT, str(path), "--by", "customer,day", "--json"], env).stdout)
    assert data["prices"]["source"] == "genai-prices" and data["unpriced_models"] == {"my-local-llama": 1}
    rows = {(r["customer"], r["day"]): r for r in data["rows"]}
    acme = expected("gpt-4o", input_tokens=1000, cache_read_tokens=400, output_tokens=200) + expected(
        "o3", {"service_tier": "flex"}, input_tokens=2000, output_tokens=100
    )
    assert rows[("acme", "2026-11-20")]["cost_usd"] == pytest.approx(float(acme))
    assert rows[("acme", "2026-11-20")]["unpriced"] == 0
    llama_row = rows[("globex", "2026-11-20")]
    assert (llama_row["cost_usd"], llama_row["unpriced"], llama_row["calls"]) == (None, 1, 1)
    assert data["totals"]["unpriced"] == 1
    assert data["totals"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in data["rows"]))

    out = run([*REPORT, str(path), "--by", "model", "--format", "csv"], env).stdout
    sheet = list(csv.DictReader(io.StringIO(out)))
    by_model = {r["model"]: r for r in sheet}
    assert by_model["my-local-llama"]["cost_usd"] == "" and by_model["my-local-llama"]["unpriced"] == "1"
    assert Decimal(by_model["gpt-4o-mini"]["cost_usd"]) == expected(
        "gpt-4o-mini", input_tokens=5000, output_tokens=500
    )

    text = run([*REPORT, str(path)], env).stdout
    llama = next(line for line in text.splitlines() if line.strip().startswith("my-local-llama"))
    assert llama.split()[-1] == "?"
    text = prose(text)
    assert "cost USD (est.)" in text and "is an estimate, not an invoice: genai-prices" in text
    assert "model not in genai-prices' table: my-local-llama (1)" in text


def test_without_genai_prices_there_is_no_cost_column(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # what an import of a missing package does
    assert load_prices() is None
    path = write_jsonl(tmp_path / "u.jsonl", [wire("acme", "gpt-4o", 10, 10, timestamp=WHEN)])
    env = without_prices(clean_env(tmp_path), tmp_path)
    text = run([*REPORT, str(path)], env).stdout
    assert "cost" not in text.splitlines()[3]  # the column header row of the first table
    assert "no cost column: pip install 'cmdrdata-autopatch[prices]' (Python >= 3.11)" in prose(text)
    data = json.loads(run([*REPORT, str(path), "--json"], env).stdout)
    assert data["prices"] is None and "cost_usd" not in data["totals"] and "unpriced_models" not in data
    sheet = run([*REPORT, str(path), "--format", "csv"], env).stdout
    assert "cost_usd" not in sheet.splitlines()[0]


def test_costs_are_written_so_a_small_call_never_reads_as_zero() -> None:
    from cmdrdata_autopatch.pricing import format_cost

    shown = [format_cost(v) for v in (0, 3.2e-7, 0.000032, 0.0048, 0.5, 1234.5678, Decimal("0.00021"))]
    assert shown == ["0", "0.00000032", "0.000032", "0.0048", "0.5000", "1,234.5678", "0.00021"]


@needs_prices
def test_other_hosts_are_priced_by_their_api_address_or_not_at_all() -> None:
    import genai_prices

    prices = table()
    moment = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    llama = {**wire("acme", "llama-3.3-70b-versatile", 1_000_000, 0, timestamp=WHEN)}
    groq = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1_000_000),
        llama["model"],
        provider_id="groq",
        genai_request_timestamp=moment,
    ).total_price
    assert prices.cost({**llama, "provider": "localhost:8000"}) is None  # a local server: no price
    assert prices.cost({**llama, "provider": "api.groq.com"}) == Decimal(groq)  # a known host's own prices
    gateway = {**wire("acme", "gpt-4o", 1000, 100, timestamp=WHEN), "provider": "llm-gateway.corp.example"}
    assert prices.cost(gateway) == expected("gpt-4o", input_tokens=1000, output_tokens=100)
    assert prices.unknown_models == {"llama-3.3-70b-versatile": 1}
