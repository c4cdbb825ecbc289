"""The decision engine: one compiled snapshot of a site's rules, asked once per request.

Nothing here scans rules linearly. Addresses (ip_block rules, quarantines, rate-limit keys, the
allow-list) go into sorted disjoint ranges searched by bisection; user-agent substrings into one
Aho-Corasick automaton, user-agent regexes into one combined regex that must hit before the
(usually few) regex rules are tried one by one; geo rules into a dict by country code. The
candidates a request matches are then ordered by (priority, id): the first ``block`` or
``challenge`` decides, ``log`` records and continues.
"""

from __future__ import annotations

import array
import bisect
import heapq
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from re import _constants as re_constants  # type: ignore[attr-defined]
from re import _parser as re_parser  # type: ignore[attr-defined]
from typing import Any, Literal

import ahocorasick

from tools.vaultshield.ratelimit import RateLimiter, parse_threshold

Outcome = Literal["allow", "block", "challenge", "rate_limited"]
RULE_TYPES = ("ip_block", "user_agent_block", "rate_limit", "geo_block")
ACTIONS = ("block", "challenge", "log")
QUARANTINE_PRIORITY = 0  # above every user rule (priorities start at 1)
_EMPTY: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)  # identity hash: cheap de-duplication per request
class Rule:
    id: int
    type: str
    value: str
    action: str = "block"
    priority: int = 100
    source: str = "rule"  # "rule" or "quarantine"
    forced: bool = False  # quarantines made with force=True apply even to the allow-list
    order: tuple[int, int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rank = 0 if self.source == "quarantine" else 1
        object.__setattr__(self, "order", (self.priority, rank, self.id))

    @property
    def label(self) -> str:
        return f"q{self.id}" if self.source == "quarantine" else str(self.id)


@dataclass(slots=True)
class Decision:
    outcome: Outcome
    rule: Rule | None = None
    logged: list[Rule] = field(default_factory=list)
    retry_after: float = 0.0


def parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR (host bits allowed) as a network; ValueError when it is neither."""
    net = ipaddress.ip_network(value.strip(), strict=False)
    mapped = getattr(net.network_address, "ipv4_mapped", None)
    if mapped is not None:
        net = ipaddress.ip_network(f"{mapped}/{max(0, net.prefixlen - 96)}", strict=False)
    return net


def parse_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(value.split("%", 1)[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped if mapped is not None else addr


def address_key(text: str) -> tuple[int, int]:
    """(version, integer) of an address, IPv4-mapped IPv6 folded to IPv4; ValueError if bad."""
    try:
        if ":" in text:
            number = int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]))
            if number >> 32 == 0xFFFF:
                return 4, number & 0xFFFFFFFF
            return 6, number
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text))
    except OSError:
        raise ValueError(f"not an IP address: {text!r}") from None


def network_span(value: str) -> tuple[int, int, int]:
    """(version, first, last) of an address or CIDR; the fast path for stored, normalised rules."""
    text, _, length = value.strip().partition("/")
    try:
        version, number = address_key(text)
        bits = 32 if version == 4 else 128
        prefix = int(length) if length else bits
        if ":" in text and version == 4:
            prefix = prefix - 96 if length else 32
        if not 0 <= prefix <= bits:
            raise ValueError
    except ValueError:
        net = parse_network(value)
        return net.version, int(net.network_address), int(net.broadcast_address)
    host = (1 << (bits - prefix)) - 1
    return version, number & ~host, number | host


class RangeTable:
    """Sorted disjoint address ranges, each carrying the payloads of every range covering it.

    A lookup is a bisection; with many ranges a 65,536-slot index on the top 16 address bits
    narrows it to the few ranges starting in that slot first (a cache-friendly two-level
    search: 200k ranges cost about as much as 20).
    """

    INDEX_BITS = 16

    def __init__(
        self, items: Iterable[tuple[int, int, Any]], key: Callable[[Any], Any], bits: int = 32
    ) -> None:
        ordered = sorted(items, key=lambda item: item[0])
        bounds = sorted({s for s, _, _ in ordered} | {e + 1 for _, e, _ in ordered})
        self.starts: list[int] = []
        self.values: list[tuple[Any, ...]] = []
        active: dict[int, Any] = {}
        ends: list[tuple[int, int]] = []
        i = 0
        for point in bounds:
            while ends and ends[0][0] < point:
                active.pop(heapq.heappop(ends)[1], None)
            while i < len(ordered) and ordered[i][0] == point:
                active[i] = ordered[i][2]
                heapq.heappush(ends, (ordered[i][1], i))
                i += 1
            if len(active) > 1:
                value = tuple(sorted(active.values(), key=key))
            else:
                value = tuple(active.values()) if active else _EMPTY
            if self.values and self.values[-1] == value:
                continue
            self.starts.append(point)
            self.values.append(value)
        self.shift = bits - self.INDEX_BITS
        self.index: Sequence[int] | None = None
        if len(self.starts) > 256:
            slots = 1 << self.INDEX_BITS
            index = [bisect.bisect_left(self.starts, b << self.shift) for b in range(slots)]
            self.index = array.array("L", [*index, len(self.starts)])
            if bits <= 64:  # contiguous machine words: far fewer cache misses than int objects
                self.starts = array.array("Q", self.starts)  # type: ignore[assignment]

    def lookup(self, number: int) -> tuple[Any, ...]:
        if self.index is None:
            index = bisect.bisect_right(self.starts, number) - 1
        else:
            slot = number >> self.shift
            lo, hi = self.index[slot], self.index[slot + 1]
            index = bisect.bisect_right(self.starts, number, lo, hi) - 1
        return self.values[index] if index >= 0 else _EMPTY

    def __len__(self) -> int:
        return len(self.starts)


class AddressMap:
    """IPv4 and IPv6 range tables behind one lookup by address string."""

    def __init__(self, entries: Iterable[tuple[str, Any]], key: Callable[[Any], Any]) -> None:
        v4: list[tuple[int, int, Any]] = []
        v6: list[tuple[int, int, Any]] = []
        for cidr, payload in entries:
            version, first, last = network_span(cidr)
            (v4 if version == 4 else v6).append((first, last, payload))
        self.v4 = RangeTable(v4, key, bits=32)
        self.v6 = RangeTable(v6, key, bits=128)
        self.empty = not v4 and not v6

    def lookup(self, key: tuple[int, int]) -> tuple[Any, ...]:
        if self.empty:
            return _EMPTY
        return (self.v4 if key[0] == 4 else self.v6).lookup(key[1])


def _rule_key(rule: Rule) -> tuple[int, int, int]:
    return rule.order


def _ua_pattern(value: str) -> str | None:
    """The regex body when the rule is written ``/.../``, else None (a plain substring)."""
    text = value.strip()
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        return text[1:-1]
    return None


def validate_rule(type_: str, value: str, action: str) -> str:
    """The value normalised for storage; ValueError with a readable message when invalid."""
    if type_ not in RULE_TYPES:
        raise ValueError(f"type must be one of {', '.join(RULE_TYPES)}")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    value = value.strip()
    if not value:
        raise ValueError("value must not be empty")
    if type_ == "ip_block":
        return str(parse_network(value))
    if type_ == "user_agent_block":
        pattern = _ua_pattern(value)
        if pattern is not None:
            if not pattern:
                raise ValueError("empty regular expression")
            try:
                re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value
    if type_ == "geo_block":
        code = value.upper()
        if not re.fullmatch(r"[A-Z]{2}", code):
            raise ValueError("geo_block value must be an ISO 3166-1 alpha-2 country code")
        return code
    key, limit, period = parse_rate_value(value)
    return f"{key} {limit}/{_PERIOD_NAMES[period]}"


_PERIOD_NAMES = {1.0: "sec", 60.0: "min", 3600.0: "hour", 86400.0: "day"}


def parse_rate_value(value: str) -> tuple[str, int, float]:
    """``[KEY ]N/unit`` -> (key, N, period seconds); KEY is an IP, a CIDR or ``*`` (per client)."""
    parts = value.split()
    if len(parts) == 1:
        key, threshold = "*", parts[0]
    elif len(parts) == 2:
        key, threshold = parts
    else:
        raise ValueError("rate_limit value is '[KEY ]N/unit', e.g. '* 60/min' or '10.0.0.0/8 5/s'")
    if key != "*":
        key = str(parse_network(key))
    limit, period = parse_threshold(threshold)
    return key, limit, period


@dataclass(frozen=True, slots=True, eq=False)
class _RateRule:
    rule: Rule
    key: str
    limit: int
    period: float


def required_literal(pattern: str) -> str | None:
    """A lower-case substring every match of ``pattern`` contains (>= 3 chars), if one is plain.

    Only top-level literal runs count: a top-level sequence is all required, so the longest
    run of LITERAL items is a sound prefilter. Alternations, classes and repeats end a run.
    """
    try:
        parsed = re_parser.parse(pattern)
    except re.error:
        return None
    best, run = "", ""
    for op, arg in parsed:
        if op is re_constants.LITERAL:
            run += chr(arg)
            best = max(best, run, key=len)
        else:
            run = ""
    return best.lower() if len(best) >= 3 else None


class Engine:
    """A compiled, immutable rule snapshot for one site (its rules plus the global ones)."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        allowlist: Sequence[str] = (),
        shield_mode: bool = False,
        shield_rate_per_minute: int = 60,
        country_of: Callable[[str], str | None] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.rule_count = len(rules)
        self.shield_mode = shield_mode
        self.shield_rate_per_minute = shield_rate_per_minute
        self.country_of = country_of
        self.limiter = limiter or RateLimiter()
        self.allow = AddressMap(((a, True) for a in allowlist), key=lambda _: 0)
        address_rules: list[tuple[str, Rule]] = []
        forced: list[tuple[str, Rule]] = []
        rate_keyed: list[tuple[str, _RateRule]] = []
        self.rate_any: tuple[_RateRule, ...] = ()
        ua_rules: list[Rule] = []
        geo: dict[str, list[Rule]] = {}
        for rule in rules:
            if rule.type == "ip_block":
                address_rules.append((rule.value, rule))
                if rule.forced:
                    forced.append((rule.value, rule))
            elif rule.type == "user_agent_block":
                ua_rules.append(rule)
            elif rule.type == "geo_block":
                geo.setdefault(rule.value.upper(), []).append(rule)
            elif rule.type == "rate_limit":
                key, limit, period = parse_rate_value(rule.value)
                rr = _RateRule(rule, key, limit, period)
                if key == "*":
                    self.rate_any += (rr,)
                else:
                    rate_keyed.append((key, rr))
        self.addresses = AddressMap(address_rules, key=_rule_key)
        self.forced = AddressMap(forced, key=_rule_key)
        self.rate_keyed = AddressMap(rate_keyed, key=lambda rr: rr.rule.order)
        self._compile_user_agents(ua_rules)
        self.geo = {cc: tuple(sorted(group, key=_rule_key)) for cc, group in geo.items()}

    def _compile_user_agents(self, rules: list[Rule]) -> None:
        """Substrings, and regexes with a required literal, into one Aho-Corasick automaton;
        the remaining regexes into one combined regex that must hit before they are tried."""
        triggers: dict[str, list[tuple[Rule, re.Pattern[str] | None]]] = {}
        unanchored: list[tuple[Rule, re.Pattern[str]]] = []
        for rule in rules:
            pattern = _ua_pattern(rule.value)
            if pattern is None:
                triggers.setdefault(rule.value.lower(), []).append((rule, None))
                continue
            compiled = re.compile(pattern, re.IGNORECASE)
            literal = required_literal(pattern)
            if literal is None:
                unanchored.append((rule, compiled))
            else:
                triggers.setdefault(literal, []).append((rule, compiled))
        self.automaton: Any = None
        if triggers:
            self.automaton = ahocorasick.Automaton()
            for literal, group in triggers.items():
                self.automaton.add_word(literal, tuple(group))
            self.automaton.make_automaton()
        self.regex_rules = tuple(sorted(unanchored, key=lambda pair: pair[0].order))
        self.regex_any = (
            re.compile("|".join(f"(?:{p.pattern})" for _, p in unanchored), re.IGNORECASE)
            if unanchored
            else None
        )

    def _user_agent_rules(self, user_agent: str) -> list[Rule]:
        found: list[Rule] = []
        if self.automaton is not None and user_agent:
            for _end, group in self.automaton.iter(user_agent.lower()):
                for rule, pattern in group:
                    if pattern is None or pattern.search(user_agent):
                        found.append(rule)
        if self.regex_any is not None and self.regex_any.search(user_agent):
            found.extend(r for r, p in self.regex_rules if p.search(user_agent))
        return list(dict.fromkeys(found)) if len(found) > 1 else found  # repeated substrings

    def candidates(
        self, key: tuple[int, int], client_ip: str, user_agent: str
    ) -> list[Rule | _RateRule]:
        """Every rule this request matches (rate limits not yet charged), in priority order."""
        found: list[Any] = list(self.addresses.lookup(key))
        if user_agent:
            found.extend(self._user_agent_rules(user_agent))
        if self.geo and self.country_of is not None:
            country = self.country_of(client_ip)
            if country:
                found.extend(self.geo.get(country.upper(), _EMPTY))
        found.extend(self.rate_keyed.lookup(key))
        found.extend(self.rate_any)
        if len(found) > 1:
            found.sort(key=_candidate_order)
        return found

    def decide(
        self, client_ip: str, user_agent: str = "", *, passed_challenge: bool = False
    ) -> Decision:
        """The decision for one request. Charges the rate-limit buckets it reaches."""
        key = address_key(client_ip)
        if self.allow.lookup(key):
            forced = self.forced.lookup(key)
            return Decision("block", forced[0]) if forced else Decision("allow")
        return self.walk(self.candidates(key, client_ip, user_agent), client_ip, passed_challenge)

    def walk(
        self, candidates: list[Rule | _RateRule], client_ip: str, passed_challenge: bool
    ) -> Decision:
        """Apply the matched rules in order: log continues, the first block/challenge decides."""
        logged: list[Rule] = []
        tighten = 4 if self.shield_mode else 1
        for candidate in candidates:
            if isinstance(candidate, _RateRule):
                rule = candidate.rule
                bucket = f"r{rule.id}:" + (client_ip if candidate.key == "*" else candidate.key)
                limit = max(1, candidate.limit // tighten)
                retry = self.limiter.hit(bucket, limit, candidate.period)
                if retry <= 0:
                    continue
                if rule.action == "log":
                    logged.append(rule)
                    continue
                if rule.action == "challenge":
                    if passed_challenge:
                        continue
                    return Decision("challenge", rule, logged)
                return Decision("rate_limited", rule, logged, retry)
            if candidate.action == "log":
                logged.append(candidate)
            elif candidate.action == "challenge":
                if not passed_challenge:
                    return Decision("challenge", candidate, logged)
            else:
                return Decision("block", candidate, logged)
        if self.shield_mode:
            if not passed_challenge:
                return Decision("challenge", None, logged)
            retry = self.limiter.hit(f"shield:{client_ip}", self.shield_rate_per_minute, 60.0)
            if retry > 0:
                return Decision("rate_limited", None, logged, retry)
        return Decision("allow", None, logged)


def _candidate_order(candidate: Any) -> tuple[int, int, int]:
    return candidate.rule.order if isinstance(candidate, _RateRule) else candidate.order


class LayeredEngine:
    """A large compiled base plus a small overlay of later changes, so a change to a big rule
    set costs a recompile of the change, not of every rule.

    The overlay engine carries the current allow-list, shield mode, quarantines and the rules
    added since the base was built; ``removed`` hides base rules deleted since.
    """

    def __init__(self, base: Engine, overlay: Engine, removed: frozenset[int]) -> None:
        self.base = base
        self.overlay = overlay
        self.removed = removed
        self.rule_count = base.rule_count - len(removed) + overlay.rule_count
        self.shield_mode = overlay.shield_mode

    def decide(
        self, client_ip: str, user_agent: str = "", *, passed_challenge: bool = False
    ) -> Decision:
        key = address_key(client_ip)
        overlay = self.overlay
        if overlay.allow.lookup(key):
            forced = overlay.forced.lookup(key)
            return Decision("block", forced[0]) if forced else Decision("allow")
        found = self.base.candidates(key, client_ip, user_agent)
        if self.removed and found:
            found = [c for c in found if _candidate_rule(c).id not in self.removed]
        extra = overlay.candidates(key, client_ip, user_agent)
        if extra:
            found = sorted([*found, *extra], key=_candidate_order)
        return overlay.walk(found, client_ip, passed_challenge)


def _candidate_rule(candidate: Any) -> Rule:
    return candidate.rule if isinstance(candidate, _RateRule) else candidate  # type: ignore[no-any-return]
