"""Event bodies: compact JSON byte-for-byte as JavaScript's ``JSON.stringify`` writes it.

Receivers verify ``HMAC-SHA256(secret, JSON.stringify(payload))``; a Node receiver that parses
and re-stringifies the body must get the very bytes we signed. So: no spaces, UTF-8 (not
``\\u`` escapes) for non-ASCII, JavaScript's number formatting (``1`` not ``1.0``, ``1e+21``,
``1e-7``), integer-like keys first in ascending order (JavaScript object key order), and
``null`` where JavaScript would write it (NaN, Infinity).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

_ARRAY_INDEX = re.compile(r"^(0|[1-9][0-9]*)$")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_ARRAY_INDEX = 2**32 - 2


def js_number(value: float) -> str:
    """A float as ECMAScript's Number::toString writes it."""
    if math.isnan(value) or math.isinf(value):
        return "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = k + int(exponent)  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def _js_key_order(mapping: Mapping[str, Any]) -> list[str]:
    keys = [str(k) for k in mapping]
    index_keys = sorted(
        (k for k in keys if _ARRAY_INDEX.match(k) and int(k) <= MAX_ARRAY_INDEX), key=int
    )
    chosen = set(index_keys)
    return index_keys + [k for k in keys if k not in chosen]


def _string(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if _LONE_SURROGATE.search(text):  # well-formed JSON.stringify escapes lone surrogates
        text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def _write(value: Any, out: list[str]) -> None:
    if value is None or value is True or value is False:
        out.append("null" if value is None else ("true" if value else "false"))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(js_number(value))
    elif isinstance(value, Mapping):
        out.append("{")
        items = {str(k): v for k, v in value.items()}
        first = True
        for key in _js_key_order(items):
            if not first:
                out.append(",")
            first = False
            out.append(_string(key))
            out.append(":")
            _write(items[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def js_stringify(value: Any) -> str:
    """``JSON.stringify(value)`` for JSON-shaped Python data."""
    out: list[str] = []
    _write(value, out)
    return "".join(out)


def encode_body(value: Any) -> bytes:
    """The exact bytes sent and signed."""
    return js_stringify(value).encode("utf-8", errors="surrogatepass")


def ledger_event(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope for one ledger entry (``models.ledger.entries_after`` item)."""
    return {
        "id": event_id_for_seq(int(entry["seq"])),
        "type": entry["action"],
        "timestamp": entry["ts"],
        "data": dict(entry),
    }


def event_id_for_seq(seq: int) -> str:
    return f"evt_{seq}"
