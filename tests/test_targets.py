"""The version table (`cmdrdata_autopatch/targets.py`): version parsing, row ranges, rows per release.

The table is data; these tests pin its boundaries (the releases where a method appears, moves or goes) and
its shape. Whether the rows match the real `openai` releases is the verifier's job: its logic is tested in
`test_verify_targets.py`, and the full run over every release is `python -m tools.verify_targets`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cmdrdata_autopatch import targets as tmod
from cmdrdata_autopatch.targets import (
    OLDEST_SUPPORTED,
    TARGETS,
    VERIFIED_UP_TO,
    Target,
    is_newer_than_verified,
    parse_version,
    targets_for,
)

R = "openai.resources."


def keys_for(version: str) -> set[str]:
    return {t.key for t in targets_for(version)}


# ---------------------------------------------------------------------------------------------------------
# parse_version / Target / targets_for


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.66.5", (1, 66, 5)),
        ("1.0.0", (1, 0, 0)),
        ("3.57.0", (3, 57, 0)),
        ("2.0.0rc1", (2, 0, 0)),
        ("1.0.0b3", (1, 0, 0)),
        (" 1.2 ", (1, 2, 0)),
        ("4", (4, 0, 0)),
        ("1.2.3.4", (1, 2, 3)),
        ("1.2.3+local", (1, 2, 3)),
    ],
)
def test_parse_version(text: str, expected: tuple[int, ...]) -> None:
    assert parse_version(text) == expected


def test_parse_version_orders_numerically_not_lexically() -> None:
    # "1.9.0" < "1.10.0" only numerically: a string compare would put 1.10 first and break every range.
    assert parse_version("1.9.0") < parse_version("1.10.0") < parse_version("1.100.0")
    assert parse_version("1.109.1") < parse_version("2.0.0")


def test_covers_is_inclusive_at_both_ends() -> None:
    t = Target(R + "edits", "Edits.create", "edits", "1.0.0", "1.7.1")
    assert t.covers("1.0.0")
    assert t.covers("1.7.1")
    assert t.covers("1.7.0")
    assert not t.covers("1.7.2")
    assert not t.covers("0.28.1")


def test_open_row_covers_everything_from_first_on() -> None:
    t = Target(R + "embeddings", "Embeddings.create", "embeddings", "1.66.0")
    assert not t.covers("1.65.5")
    assert t.covers("1.66.0")
    assert t.covers("99.0.0")


def test_target_name_parts() -> None:
    t = Target(R + "chat.completions", "Completions.create", "chat.completions", "1.0.0")
    assert t.class_name == "Completions"
    assert t.method_name == "create"
    assert t.async_attr == "AsyncCompletions.create"
    assert t.key == "openai.resources.chat.completions:Completions.create"


CHAT_PARSE = R + "chat.completions.completions:Completions.parse"
BETA_PARSE = R + "beta.chat.completions:Completions.parse"
RESPONSES_CREATE = R + "responses.responses:Responses.create"
RESPONSES_PARSE = R + "responses.responses:Responses.parse"
BETA_RESPONSES = R + "beta.responses.responses:Responses.create"
EDITS = R + "edits:Edits.create"
SPEECH = R + "audio.speech:Speech.create"


@pytest.mark.parametrize(
    ("version", "present", "absent"),
    [
        ("1.0.0", {EDITS}, {SPEECH, BETA_PARSE, CHAT_PARSE, RESPONSES_CREATE}),
        ("1.1.0", {EDITS, SPEECH}, set()),
        ("1.7.1", {EDITS}, set()),
        ("1.7.2", set(), {EDITS}),
        ("1.39.0", set(), {BETA_PARSE, CHAT_PARSE}),
        ("1.40.0", {BETA_PARSE}, {CHAT_PARSE}),
        ("1.65.0", {BETA_PARSE}, {RESPONSES_CREATE, RESPONSES_PARSE}),
        ("1.66.0", {RESPONSES_CREATE, RESPONSES_PARSE}, set()),
        ("1.91.0", {BETA_PARSE}, {CHAT_PARSE}),
        ("1.92.0", {CHAT_PARSE}, {BETA_PARSE}),
        ("2.44.0", set(), {BETA_RESPONSES}),
        ("2.45.0", {BETA_RESPONSES, CHAT_PARSE, RESPONSES_CREATE}, {BETA_PARSE, EDITS}),
        (VERIFIED_UP_TO, {CHAT_PARSE, BETA_RESPONSES, SPEECH}, {BETA_PARSE, EDITS}),
    ],
)
def test_targets_for_boundaries(version: str, present: set[str], absent: set[str]) -> None:
    keys = keys_for(version)
    assert present <= keys
    assert not (absent & keys)


def test_chat_parse_switches_from_beta_exactly_once() -> None:
    # One and only one chat `parse` row on every release that has one: never both (double count), never a gap.
    for v in ("1.40.0", "1.63.0", "1.91.0", "1.92.0", "2.0.0", "3.0.0"):
        assert len(keys_for(v) & {CHAT_PARSE, BETA_PARSE}) == 1, v
    assert not keys_for("1.39.0") & {CHAT_PARSE, BETA_PARSE}


def test_newer_than_verified_keeps_open_rows() -> None:
    newer = "99.0.0"
    assert is_newer_than_verified(newer)
    assert not is_newer_than_verified(VERIFIED_UP_TO)
    assert keys_for(newer) == {t.key for t in TARGETS if t.last is None}


def test_every_row_names_class_and_method_and_has_an_async_twin() -> None:
    for t in TARGETS:
        cls, _, method = t.attr.partition(".")
        assert cls and method and "." not in method, t
        assert cls[0].isupper() and not cls.startswith("Async"), t
        assert t.async_attr == f"Async{cls}.{method}"
        assert t.module.startswith("openai.resources."), t


def test_row_keys_are_unique() -> None:
    keys = [t.key for t in TARGETS]
    assert len(keys) == len(set(keys))


def test_row_ranges_are_well_formed() -> None:
    for t in TARGETS:
        assert parse_version(t.first) >= parse_version(OLDEST_SUPPORTED), t
        if t.last is not None:
            assert parse_version(t.first) <= parse_version(t.last) <= parse_version(VERIFIED_UP_TO), t
        assert t.api, t


def test_table_is_data_only() -> None:
    # patching.py iterates TARGETS; the table module must not import the SDK or the patcher.
    src = Path(tmod.__file__).read_text(encoding="utf-8")
    assert "import openai" not in src and "wrapt" not in src
