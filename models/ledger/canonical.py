"""RFC 8785 (JSON Canonicalization Scheme) for ledger entries: a fast, documented subset.

Entries hold only strings, integers, booleans, null, arrays and objects; ``normalise`` makes any
value so (floats and integers beyond IEEE-754's exact range become strings, tuples lists, other
objects their ``str``). For such values RFC 8785 is: UTF-8, no insignificant whitespace, object
members sorted by the UTF-16 code units of their names, strings escaped only where JSON must
(``"``, ``\\`` and U+0000..U+001F, with the short forms \\b \\f \\n \\r \\t). ``orjson`` with
sorted keys produces exactly that, except that it sorts by code point; the two orders differ
only for names holding characters beyond the BMP, and those (rare) values go through the
reference ``rfc8785`` package instead. tests/ledger/test_canonical.py checks the equivalence.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import orjson
import rfc8785

MAX_SAFE_INTEGER = 2**53 - 1


def normalise(value: Any) -> Any:
    """``value`` restricted to the canonical subset (see module docstring)."""
    if isinstance(value, str):
        if "\x00" in value:  # PostgreSQL's JSONB cannot hold U+0000
            value = value.replace("\x00", "\ufffd")
        return value if value.isascii() else _valid_unicode(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, Mapping):
        return {normalise(str(k)): normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be stored or hashed as UTF-8
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


_ASTRAL_LEAD = re.compile(rb"[\xf0-\xf4]")


def _has_astral_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any(any(ord(c) > 0xFFFF for c in k) or _has_astral_key(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_astral_key(v) for v in value)
    return False


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a value already in the canonical subset."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    if not data.isascii() and _ASTRAL_LEAD.search(data) and _has_astral_key(value):
        return rfc8785.dumps(value)
    return data
