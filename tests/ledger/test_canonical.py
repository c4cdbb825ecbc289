"""The canonical JSON subset is byte-for-byte RFC 8785 (checked against the ``rfc8785`` package)."""

from __future__ import annotations

import datetime as dt

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from models.ledger.canonical import MAX_SAFE_INTEGER, canonical_json, normalise

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
scalars = st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_subset_is_rfc8785(value: object) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_sort_order_is_utf16_not_code_point() -> None:
    value = {"\ue000": 1, "\U0001f600": 2, "a": {"\uffff": 0, "\U00010000": 1}}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json(value).index("\U0001f600".encode()) < canonical_json(value).index(
        "\ue000".encode()
    )


def test_escapes_match() -> None:
    value = {"s": '\x00\x01\x1f\x7f"\\/\b\f\n\r\t\u2028é€😀'}
    assert canonical_json(value) == rfc8785.dumps(value)


def test_normalise_keeps_entries_in_the_subset() -> None:
    value = normalise(
        {
            1: 1.5,
            "big": 2**64,
            "neg": -(2**60),
            "t": (1, 2),
            "when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            "b": b"\x01",
            "nul": "a\x00b",
            "lone": "\ud800x",
        }
    )
    assert value == {
        "1": "1.5",
        "big": str(2**64),
        "neg": str(-(2**60)),
        "t": [1, 2],
        "when": "2026-01-01T00:00:00+00:00",
        "b": "01",
        "nul": "a\ufffdb",
        "lone": "?x",
    }
    assert canonical_json(value) == rfc8785.dumps(value)
