"""The decision engine, the challenge and the geo lookups, in process (no database)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.traffic.mmdb import write_country_mmdb
from tools.vaultshield.challenge import Challenger, solve
from tools.vaultshield.engine import Engine, RangeTable, Rule, validate_rule
from tools.vaultshield.geo import load_country_lookup
from tools.vaultshield.ratelimit import RateLimiter


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ipv6_cidrs_and_mapped_addresses() -> None:
    engine = Engine(
        [
            Rule(1, "ip_block", "2001:db8::/32", priority=20),
            Rule(2, "ip_block", "2001:db8:1::/48", action="challenge", priority=10),
            Rule(3, "ip_block", "192.0.2.0/24"),
        ]
    )
    assert engine.decide("2001:db8:1::5").outcome == "challenge"
    assert engine.decide("2001:db8:2::5").outcome == "block"
    assert engine.decide("2001:db9::1").outcome == "allow"
    assert engine.decide("::ffff:192.0.2.9").outcome == "block"
    assert engine.decide("2001:db8:1::5", passed_challenge=True).rule.id == 1  # type: ignore[union-attr]


def test_log_records_and_continues_first_block_decides() -> None:
    engine = Engine(
        [
            Rule(1, "ip_block", "10.0.0.0/8", action="log", priority=1),
            Rule(2, "user_agent_block", "scanner", action="log", priority=2),
            Rule(3, "ip_block", "10.1.0.0/16", priority=30),
            Rule(4, "user_agent_block", "scanner", priority=40),
        ]
    )
    decision = engine.decide("10.1.2.3", "A Scanner")
    assert decision.outcome == "block" and decision.rule is not None and decision.rule.id == 3
    assert [r.id for r in decision.logged] == [1, 2]
    assert engine.decide("10.2.0.1", "curl").outcome == "allow"
    assert [r.id for r in engine.decide("10.2.0.1", "curl").logged] == [1]


def test_user_agent_overlapping_literals_and_regex() -> None:
    engine = Engine(
        [
            Rule(1, "user_agent_block", "bot", action="log", priority=50),
            Rule(2, "user_agent_block", "BotNet", action="block", priority=10),
            Rule(3, "user_agent_block", "/python-(requests|urllib)/", priority=5),
        ]
    )
    assert engine.decide("1.1.1.1", "my-botnet-client").rule.id == 2  # type: ignore[union-attr]
    assert engine.decide("1.1.1.1", "Python-Requests/2.31").rule.id == 3  # type: ignore[union-attr]
    assert engine.decide("1.1.1.1", "googlebot").outcome == "allow"
    assert engine.decide("1.1.1.1", "").outcome == "allow"


def test_per_client_rate_limit_and_retry_after() -> None:
    clock = Clock()
    engine = Engine([Rule(1, "rate_limit", "* 3/min")], limiter=RateLimiter(clock=clock))
    assert [engine.decide("10.0.0.1").outcome for _ in range(3)] == ["allow"] * 3
    limited = engine.decide("10.0.0.1")
    assert limited.outcome == "rate_limited" and 0 < limited.retry_after <= 20
    assert engine.decide("10.0.0.2").outcome == "allow"  # per client
    clock.now += 20
    assert engine.decide("10.0.0.1").outcome == "allow"


def test_keyed_rate_limit_shares_one_bucket() -> None:
    engine = Engine([Rule(1, "rate_limit", "10.0.0.0/24 2/min")], limiter=RateLimiter(Clock()))
    assert engine.decide("10.0.0.1").outcome == "allow"
    assert engine.decide("10.0.0.2").outcome == "allow"
    assert engine.decide("10.0.0.3").outcome == "rate_limited"
    assert engine.decide("10.0.1.3").outcome == "allow"


def test_shield_mode_challenges_and_tightens() -> None:
    clock = Clock()
    rules = [Rule(1, "rate_limit", "* 8/min")]
    engine = Engine(
        rules, allowlist=["10.9.0.0/16"], shield_mode=True, limiter=RateLimiter(clock=clock)
    )
    assert engine.decide("10.0.0.1").outcome == "challenge"
    assert engine.decide("10.9.1.1").outcome == "allow"
    outcomes = [engine.decide("10.0.0.2", passed_challenge=True).outcome for _ in range(3)]
    assert outcomes == ["allow", "allow", "rate_limited"]  # 8/min tightened to 2/min


def test_allowlist_wins_except_forced_quarantine() -> None:
    engine = Engine(
        [
            Rule(1, "ip_block", "10.0.0.0/8", priority=1),
            Rule(7, "ip_block", "10.9.9.9/32", priority=0, source="quarantine", forced=True),
        ],
        allowlist=["10.9.0.0/16"],
    )
    assert engine.decide("10.9.1.1").outcome == "allow"
    assert engine.decide("10.9.9.9").outcome == "block"
    assert engine.decide("10.1.1.1").outcome == "block"


def test_geo_from_generated_mmdb_and_csv(tmp_path: Path) -> None:
    mmdb = tmp_path / "countries.mmdb"
    write_country_mmdb(mmdb, {"203.0.113.0/25": "JP", "198.51.100.0/24": "BR"})
    csv_file = tmp_path / "dbip-country-lite.csv"
    csv_file.write_text("203.0.113.0,203.0.113.127,JP\n2001:db8::,2001:db8::ffff,NL\n")
    for path in (mmdb, csv_file):
        lookup = load_country_lookup(path)
        assert lookup is not None
        engine = Engine([Rule(1, "geo_block", "JP")], country_of=lookup)
        assert engine.decide("203.0.113.10").outcome == "block"
        assert engine.decide("203.0.113.200").outcome == "allow"
        assert engine.decide("2001:db8::1").outcome == "allow"
    assert load_country_lookup(csv_file)("2001:db8::5") == "NL"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        ("ip_block", "10.0.0.5/8", "10.0.0.0/8"),
        ("rate_limit", "100/minute", "* 100/min"),
        ("rate_limit", "2001:db8::/32 5/s", "2001:db8::/32 5/sec"),
        ("geo_block", "de", "DE"),
    ],
)
def test_rule_values_normalised(type_: str, value: str, expected: str) -> None:
    assert validate_rule(type_, value, "block") == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2**16 - 1), st.integers(8, 16)), min_size=1, max_size=40),
    st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=40),
)
def test_range_table_matches_linear_scan(nets: list[tuple[int, int]], probes: list[int]) -> None:
    """Sorted disjoint ranges give exactly what checking every network would."""
    networks = [
        ipaddress.ip_network(f"{ipaddress.ip_address(n << 16)}/{p}", strict=False) for n, p in nets
    ]
    items = [(int(n.network_address), int(n.broadcast_address), i) for i, n in enumerate(networks)]
    table = RangeTable(items, key=lambda i: i)
    for probe in probes:
        addr = ipaddress.ip_address(probe << 16)
        expected = tuple(sorted(i for i, n in enumerate(networks) if addr in n))
        assert table.lookup(int(addr)) == expected


async def test_challenge_is_single_use_bound_and_expiring() -> None:
    clock = Clock(1_000_000.0)
    challenger = Challenger(b"k" * 32, site_id=3, difficulty=6, clock=clock)
    token = challenger.issue("10.0.0.1")
    answer = str(solve(token, 6))
    assert not await challenger.verify(token, answer, "10.0.0.2")  # other address
    assert await challenger.verify(token, answer, "10.0.0.1")
    assert not await challenger.verify(token, answer, "10.0.0.1")  # used once
    stale = challenger.issue("10.0.0.1")
    clock.now += 301
    assert not await challenger.verify(stale, str(solve(stale, 6)), "10.0.0.1")
    cookie = challenger.pass_cookie("10.0.0.1")
    assert challenger.check_pass(cookie, "10.0.0.1")
    assert not challenger.check_pass(cookie, "10.0.0.9")
    assert not Challenger(b"x" * 32, site_id=3, difficulty=6, clock=clock).check_pass(
        cookie, "10.0.0.1"
    )
    clock.now += 3601
    assert not challenger.check_pass(cookie, "10.0.0.1")


async def test_wrong_answer_rejected() -> None:
    challenger = Challenger(b"k" * 32, site_id=1, difficulty=12)
    token = challenger.issue("10.0.0.1")
    good = solve(token, 12)
    wrong = next(n for n in range(good + 1) if n != good and not _ok(token, n, 12))
    assert not await challenger.verify(token, str(wrong), "10.0.0.1")
    assert not await challenger.verify(token, "abc", "10.0.0.1")


def _ok(token: str, n: int, bits: int) -> bool:
    import hashlib

    from tools.vaultshield.challenge import leading_zero_bits

    return leading_zero_bits(hashlib.sha256(f"{token}:{n}".encode()).digest()) >= bits


def test_layered_engine_overlays_changes_on_a_compiled_base() -> None:
    from tools.vaultshield.engine import LayeredEngine

    limiter = RateLimiter(Clock())
    base = Engine(
        [Rule(1, "ip_block", "10.0.0.0/8", priority=50), Rule(2, "user_agent_block", "zgrab")],
        limiter=limiter,
    )
    overlay = Engine(
        [
            Rule(3, "ip_block", "10.1.0.0/16", action="challenge", priority=10),
            Rule(9, "ip_block", "10.2.0.0/16", priority=0, source="quarantine"),
        ],
        allowlist=["10.3.0.0/16"],
        limiter=limiter,
    )
    layered = LayeredEngine(base, overlay, removed=frozenset({2}))
    assert layered.decide("10.1.0.1").outcome == "challenge"  # overlay rule wins on priority
    assert layered.decide("10.1.0.1", passed_challenge=True).rule.id == 1  # type: ignore[union-attr]
    assert layered.decide("10.2.0.1").rule.source == "quarantine"  # type: ignore[union-attr]
    assert layered.decide("10.3.0.1").outcome == "allow"  # the overlay's allow-list
    assert layered.decide("192.0.2.1", "zgrab/0.x").outcome == "allow"  # rule 2 was deleted
    assert layered.rule_count == 3
