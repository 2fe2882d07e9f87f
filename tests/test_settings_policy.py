"""The settings policy (issue 13 item 5): what a bad value does depends on what the setting decides.

Billing settings (what is billed, where it goes) fail `patch()`; cosmetic ones fall back to their default
with one note; unknown `CMDRDATA_*` names and yes/no typos are notes with the closest valid spelling.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch import config
from cmdrdata_autopatch.config import BILLING_SETTINGS, ConfigError, load_settings


def test_the_billing_list_is_the_documented_one() -> None:
    assert set(BILLING_SETTINGS) == {
        "CMDRDATA_API_KEY",
        "CMDRDATA_ENDPOINT",
        "CMDRDATA_EXPORTER",
        "CMDRDATA_CUSTOMER_ID",
        "CMDRDATA_JSONL_PATH",
        "CMDRDATA_SPOOL_DIR",
        "CMDRDATA_DISABLED",
    }
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Settings policy") :]
    assert all(name in section for name in BILLING_SETTINGS)


@pytest.mark.parametrize(
    ("name", "value", "field", "default"),
    [
        ("CMDRDATA_LOG_LEVEL", "verbose", "log_level", None),
        ("CMDRDATA_QUEUE_SIZE", "lots", "queue_size", 10_000),
        ("CMDRDATA_FLUSH_INTERVAL", "-1", "flush_interval", 0.1),
        ("CMDRDATA_STREAM_USAGE", "sometimes", "stream_usage", "auto"),
        ("CMDRDATA_WRITE_AHEAD", "maybe", "write_ahead", True),
        ("CMDRDATA_SERVICE", "x" * 500, "service", None),
    ],
)
def test_a_bad_cosmetic_value_falls_back_with_one_note(
    name: str, value: str, field: str, default: object
) -> None:
    settings = load_settings({name: value})
    assert getattr(settings, field) == default
    assert len(settings.notes) == 1 and settings.notes[0].startswith(name), settings.notes
    assert f"using the default ({default!r})" in settings.notes[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CMDRDATA_EXPORTER", "kafka"),
        ("CMDRDATA_ENDPOINT", "http://billing.example.com/api"),
        ("CMDRDATA_CUSTOMER_ID", "a\nb"),
        ("CMDRDATA_DISABLED", "ture"),
    ],
)
def test_a_bad_billing_value_is_an_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_a_bad_keyword_still_raises() -> None:
    with pytest.raises(ConfigError, match=r"patch\(log_level=...\)"):
        load_settings({}, log_level="verbose")


def test_choices_and_flags_name_the_closest_value() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'jsonl'\?"):
        load_settings({"CMDRDATA_EXPORTER": "jsnol"})
    note = load_settings({"CMDRDATA_LOG_LEVEL": "WARN"}).notes[0]
    assert "did you mean 'WARNING'?" in note
    assert "did you mean 'true'?" in load_settings({"CMDRDATA_WRITE_AHEAD": "ture"}).notes[0]


def test_unknown_names_and_flag_typos() -> None:
    notes = load_settings({"CMDRDATA_APIKEY": "k", "CMDRDATA_AUTOPATCH": "ture", "CMDRDATA_ZZZZ": "1"}).notes
    assert (
        "CMDRDATA_APIKEY is not a cmdrdata-autopatch setting and is ignored; did you mean CMDRDATA_API_KEY?"
        in notes
    )
    assert any(n.startswith("CMDRDATA_AUTOPATCH='ture'") and "did you mean 'true'?" in n for n in notes)
    assert "CMDRDATA_ZZZZ is not a cmdrdata-autopatch setting and is ignored" in notes  # nothing close
    assert load_settings({"CMDRDATA_AUTOPATCH": "1", "CMDRDATA_SIGNALS": "off"}).notes == ()


def test_jsonl_path_needs_an_existing_directory(tmp_path: Path) -> None:
    assert load_settings({"CMDRDATA_JSONL_PATH": str(tmp_path / "u.jsonl")}).jsonl_path == str(
        tmp_path / "u.jsonl"
    )
    with pytest.raises(ConfigError, match="does not exist; create the directory first"):
        load_settings({"CMDRDATA_JSONL_PATH": str(tmp_path / "a" / "u.jsonl")})
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings({"CMDRDATA_JSONL_PATH": str(tmp_path)})
    # not used (events go over http): an unused local path does not switch billing off
    settings = load_settings(
        {"CMDRDATA_API_KEY": "k" * 20, "CMDRDATA_JSONL_PATH": str(tmp_path / "a" / "u.jsonl")}
    )
    assert settings.exporter == "http"


def test_the_jsonl_transport_never_creates_directories(tmp_path: Path) -> None:
    from cmdrdata_autopatch.transports import JsonlTransport

    transport = JsonlTransport(tmp_path / "missing" / "u.jsonl")
    result = transport.send("id", b"{}")
    assert result.outcome.name == "RETRY" and "No such file" in (result.detail or "")
    assert not (tmp_path / "missing").exists()


def test_patch_warns_once_per_note(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(config, "NOTED", set())
    monkeypatch.setattr("cmdrdata_autopatch.control.NOTED", config.NOTED)
    monkeypatch.setenv("CMDRDATA_LOG_LEVEL", "verbose")
    monkeypatch.setenv("CMDRDATA_QUEUE_SZE", "5")
    try:
        with caplog.at_level(logging.WARNING, logger="cmdrdata_autopatch"):
            cmdrdata.patch(exporter="memory")
            cmdrdata.patch(exporter="memory")
        assert cmdrdata.is_patched()
    finally:
        cmdrdata.unpatch()
    messages = [r.getMessage() for r in caplog.records if "warning:" in r.getMessage()]
    assert len(messages) == 2, messages
    assert any("CMDRDATA_LOG_LEVEL='verbose'" in m for m in messages)
    assert any("did you mean CMDRDATA_QUEUE_SIZE?" in m for m in messages)
