"""Wire format and retry policy, checked against Node's JSON.stringify and crypto."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.webhooks.events import EVENT_TYPES, subscribed
from tools.webhooks.payload import encode_body, js_number, js_stringify
from tools.webhooks.schedule import RetrySchedule, parse_retry_after
from tools.webhooks.signing import fluxcybers_signature, generate_secret, signature_headers

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")


def node(script: str, stdin: str) -> str:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", script], input=stdin, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


FLOATS = [
    1.0,
    -0.0,
    0.1 + 0.2,
    1e21,
    1e-7,
    1.5e-6,
    1e16,
    123456789012345680000.0,
    5e-324,
    1.7976931348623157e308,
    100.0,
    2.5,
    -3.75e-12,
    0.000001,
    1e20,
]


@needs_node
def test_numbers_match_javascript() -> None:
    ours = [js_number(f) for f in FLOATS]
    theirs = json.loads(
        node(
            "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{"
            "console.log(JSON.stringify(JSON.parse(d).map(x=>JSON.stringify(x))))})",
            json.dumps(FLOATS),
        )
    )
    assert ours == theirs


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(0, 20).map(str), children, max_size=4)
    ),
    max_leaves=12,
)


@needs_node
@settings(max_examples=1, deadline=None)
@given(st.lists(json_values, min_size=200, max_size=200))
def test_bodies_match_json_stringify(values: list[Any]) -> None:
    """JSON.stringify(JSON.parse(body)) gives back our exact bytes, for arbitrary JSON."""
    bodies = [js_stringify(v) for v in values]
    restrung = json.loads(
        node(
            "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{"
            "console.log(JSON.stringify(JSON.parse(d).map(b=>JSON.stringify(JSON.parse(b)))))})",
            json.dumps(bodies),
        )
    )
    assert restrung == bodies


def test_key_order_and_escapes_are_javascripts() -> None:
    value = {"b": 1, "10": 2, "2": 3, "a": {"x": '\u2028\n\x01"\\'}, "01": 4}
    assert js_stringify(value) == '{"2":3,"10":2,"b":1,"a":{"x":"\u2028\\n\\u0001\\"\\\\"},"01":4}'
    assert js_number(float("nan")) == "null"
    assert encode_body({"s": "\u00e9"}) == '{"s":"\u00e9"}'.encode()


@needs_node
def test_node_verification_example_accepts_our_signature() -> None:
    """The Node snippet from docs/webhooks.md verifies a real delivery's header."""
    secret = generate_secret()
    body = encode_body({"id": "evt_1", "type": "command_executed", "data": {"ratio": 1.0}})
    headers = signature_headers([secret], "evt_1", 1_700_000_000, body)
    script = (
        "const crypto=require('crypto');let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{"
        "const {secret,header,body}=JSON.parse(d);"
        "const expected='sha256='+crypto.createHmac('sha256',secret).update(body).digest('hex');"
        "const ok=header.split(',').some(s=>s.trim().length===expected.length&&"
        "crypto.timingSafeEqual(Buffer.from(s.trim()),Buffer.from(expected)));"
        "const restrung=JSON.stringify(JSON.parse(body))===body;"
        "console.log(JSON.stringify({ok,restrung}))})"
    )
    out = json.loads(
        node(
            script,
            json.dumps(
                {
                    "secret": secret,
                    "header": headers["X-FluxCybers-Signature"],
                    "body": body.decode(),
                }
            ),
        )
    )
    assert out == {"ok": True, "restrung": True}
    assert headers["X-FluxCybers-Signature"] == fluxcybers_signature(secret, body)


def test_default_schedule_increases_over_about_a_day() -> None:
    from models.settings import Settings

    delays = Settings().webhook_retry_schedule
    assert delays == sorted(delays) and delays[0] <= 10
    assert 20 * 3600 <= sum(delays) <= 30 * 3600  # seconds, minutes, then hours: ~a day


def test_schedule_jitter_retry_after_and_exhaustion() -> None:
    schedule = RetrySchedule([10, 100], jitter=0.2)
    rng = random.Random(7)
    for _ in range(100):
        delay = schedule.delay_after(1, rng=rng)
        assert delay is not None and 8 <= delay <= 12
    assert schedule.delay_after(1, retry_after=60, rng=rng) == 60
    assert schedule.delay_after(2, retry_after=1e9, rng=rng) == 86_400  # capped at a day
    assert schedule.delay_after(3) is None


def test_retry_after_parsing() -> None:
    now = dt.datetime(2026, 12, 3, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after("Thu, 03 Dec 2026 12:01:00 GMT", now=now) == 60
    assert parse_retry_after("Thu, 03 Dec 2026 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


def test_subscriptions() -> None:
    assert subscribed(["*"], "anything_new")
    assert subscribed(["quarantine"], "quarantine")
    assert not subscribed(["quarantine"], "command_executed")
    assert not subscribed(["*"], "ping")
    assert "agent_task_completed" in EVENT_TYPES
