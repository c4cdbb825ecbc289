"""Plain-language understanding for the offline local model: deterministic, no weights.

``plan(task, world)`` reads a task and returns the tool calls it asks for (with arguments
resolved against the registry: server and site names to ids, IPs, CIDRs, hostnames, durations,
countries to ISO codes, on/off, dry-run intent, services and packages) and the agent that owns
them. Text after a prompt-injection marker, and quoted material that is not a command to run, is
treated as data: it never becomes a call.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from agents.toolkit import World

# --- vocabularies ------------------------------------------------------------------------------

COUNTRIES: dict[str, str] = {
    "russia": "RU",
    "russian federation": "RU",
    "russian": "RU",
    "china": "CN",
    "chinese": "CN",
    "prc": "CN",
    "north korea": "KP",
    "north korean": "KP",
    "dprk": "KP",
    "south korea": "KR",
    "korea": "KR",
    "south korean": "KR",
    "iran": "IR",
    "iranian": "IR",
    "brazil": "BR",
    "brazilian": "BR",
    "india": "IN",
    "indian": "IN",
    "united states": "US",
    "usa": "US",
    "america": "US",
    "american": "US",
    "the us": "US",
    "united kingdom": "GB",
    "uk": "GB",
    "britain": "GB",
    "great britain": "GB",
    "british": "GB",
    "england": "GB",
    "germany": "DE",
    "german": "DE",
    "france": "FR",
    "french": "FR",
    "netherlands": "NL",
    "the netherlands": "NL",
    "holland": "NL",
    "dutch": "NL",
    "ukraine": "UA",
    "ukrainian": "UA",
    "vietnam": "VN",
    "viet nam": "VN",
    "vietnamese": "VN",
    "nigeria": "NG",
    "nigerian": "NG",
    "romania": "RO",
    "romanian": "RO",
    "turkey": "TR",
    "turkiye": "TR",
    "turkish": "TR",
    "pakistan": "PK",
    "pakistani": "PK",
    "indonesia": "ID",
    "indonesian": "ID",
    "belarus": "BY",
    "belarusian": "BY",
    "syria": "SY",
    "syrian": "SY",
    "cuba": "CU",
    "cuban": "CU",
    "venezuela": "VE",
    "venezuelan": "VE",
    "japan": "JP",
    "japanese": "JP",
    "canada": "CA",
    "canadian": "CA",
    "mexico": "MX",
    "mexican": "MX",
    "spain": "ES",
    "spanish": "ES",
    "italy": "IT",
    "italian": "IT",
    "poland": "PL",
    "polish": "PL",
    "thailand": "TH",
    "thai": "TH",
    "philippines": "PH",
    "filipino": "PH",
    "bangladesh": "BD",
    "egypt": "EG",
    "egyptian": "EG",
    "south africa": "ZA",
    "australia": "AU",
    "australian": "AU",
    "argentina": "AR",
    "argentinian": "AR",
    "colombia": "CO",
    "colombian": "CO",
    "kazakhstan": "KZ",
    "moldova": "MD",
    "hong kong": "HK",
    "taiwan": "TW",
    "taiwanese": "TW",
    "singapore": "SG",
    "israel": "IL",
    "israeli": "IL",
    "saudi arabia": "SA",
    "sweden": "SE",
    "swedish": "SE",
    "switzerland": "CH",
    "swiss": "CH",
}

SERVICES = [
    "nginx",
    "apache2",
    "apache",
    "httpd",
    "postgresql",
    "postgres",
    "mysql",
    "mariadb",
    "redis",
    "redis-server",
    "docker",
    "sshd",
    "ssh",
    "php-fpm",
    "php8.2-fpm",
    "memcached",
    "rabbitmq",
    "rabbitmq-server",
    "elasticsearch",
    "mongod",
    "mongodb",
    "haproxy",
    "cron",
    "crond",
    "celery",
    "gunicorn",
    "uwsgi",
    "tomcat",
    "jenkins",
    "kafka",
    "zookeeper",
    "postfix",
    "varnish",
    "traefik",
    "caddy",
    "containerd",
    "kubelet",
    "grafana-server",
    "prometheus",
    "node-exporter",
    "supervisor",
    "fail2ban",
    "named",
    "bind9",
    "ntp",
    "chronyd",
    "rsyslog",
]
SERVICE_ALIASES = {
    "postgres": "postgresql",
    "apache": "apache2",
    "mongodb": "mongod",
    "ssh": "sshd",
    "the database": "postgresql",
    "web server": "nginx",
    "webserver": "nginx",
}
PACKAGES = [
    "openssl",
    "openssh-server",
    "openssh",
    "curl",
    "bash",
    "sudo",
    "glibc",
    "libc6",
    "log4j",
    "nginx",
    "linux-image-generic",
    "kernel",
    "python3",
    "git",
    "vim",
    "zlib1g",
    "zlib",
    "systemd",
    "polkit",
    "libssl3",
    "xz-utils",
    "xz",
    "apache2",
    "postgresql",
    "redis",
    "docker-ce",
    "nodejs",
    "php",
    "tzdata",
    "ca-certificates",
    "wget",
    "rsync",
    "bind9",
    "exim4",
    "samba",
    "libwebp",
    "imagemagick",
    "ffmpeg",
    "mysql-server",
    "openjdk-17-jre",
]
KNOWN_BOTS = [
    "sqlmap",
    "nikto",
    "masscan",
    "zgrab",
    "python-requests",
    "scrapy",
    "ahrefsbot",
    "semrushbot",
    "gptbot",
    "mj12bot",
    "petalbot",
    "go-http-client",
    "wpscan",
    "nmap",
    "nuclei",
    "dirbuster",
    "gobuster",
    "headlesschrome",
    "bytespider",
]

_NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "twenty-four": 24,
    "thirty": 30,
    "forty-eight": 48,
    "seventy-two": 72,
    "couple of": 2,
    "few": 3,
    "half a": 0.5,
    "half an": 0.5,
}
_UNIT_HOURS = {
    "minute": 1 / 60,
    "min": 1 / 60,
    "mins": 1 / 60,
    "m": 1 / 60,
    "hour": 1,
    "hr": 1,
    "hrs": 1,
    "h": 1,
    "day": 24,
    "d": 24,
    "week": 168,
    "w": 168,
    "month": 720,
}

# Words the typo fixer may correct towards (only words of 5+ letters, close matches).
_VOCAB_TEXT = """
quarantine release unblock unquarantine block shield enable disable incidents incident
health status restart reboot playbook playbooks rotate diagnostics collect patch upgrade
update package service servers server threat threats feed vaultshield audit ledger
summarize summary critical severity resolved medium permanently indefinitely hours minutes
rule rules country agent traffic challenge disk space clear cleanup logs memory uptime
processes listening ports kernel version database staging production execute command
simulate dry-run preview activate deactivate isolate blacklist malicious suspicious attack
attacker protection healthy investigate report history changes nginx postgresql openssl
apache2 redis docker rate-limit throttle requests user-agent scanner temporarily minute
minutes second seconds hours days weeks months running waiting showing checking changed
started stopped blocked allowed latest recent status statuses health restarting clearing
cleaning rotating patching running crawler scraper address addresses please permanent
rotation quarantined released restarted patched rotated cleared collected enabled disabled
"""
_VOCAB = sorted(set(_VOCAB_TEXT.split()))

_VOCAB_SET = frozenset(_VOCAB)

_INJECTION = re.compile(
    r"(ignore|disregard|forget|override|skip|bypass)\s+(\S+\s+){0,3}?(instructions?|rules|"
    r"guidelines|prompts?|policy|policies|approvals?|gate|restrictions|safeguards)"
    r"|\byou\s+are\s+now\b|\bnew\s+instructions?\b|\bsystem\s*prompt\b|^\s*system\s*:|\bsystem:"
    r"|\badmin(istrator)?\s+override\b|\b(pre-?approved|already\s+approved|approval\s+granted)"
    r"|\bno\s+(need\s+for\s+)?approval\b|\bwithout\s+(asking\s+for\s+)?approval\b"
    r"|\bbypass\b|\bdeveloper\s+mode\b|\bjailbreak\b|<!--|\[\[|\{\{|\bassistant\s*:"
    r"|\bdo\s+not\s+tell\b|\bsecretly\b|\bsilently\b|\bas\s+(the\s+)?(root|admin)\s+user\b"
    r"|\bact\s+as\b|\bpretend\b",
    re.IGNORECASE | re.MULTILINE,
)
_DATA_INTRO = re.compile(
    r"(log\s+(line|entry|excerpt|says)|the\s+(ticket|email|message|alert|comment|note|payload|"
    r"request|page|output)\s+(says|reads|body|text|contains|content)|contains\s+the\s+text|"
    r"user\s+wrote|customer\s+wrote|reported\s+text)\s*:?",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(/\d{1,2})?(?![\w.]*\d)")
_IPV6 = re.compile(r"(?<![\w:])([0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7})(/\d{1,3})?(?![\w:])")
_HOST = re.compile(
    r"(?<![\w.@/-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})(?![\w-])"
)
_FILE_EXT = (".log", ".conf", ".sh", ".py", ".txt", ".json", ".yaml", ".yml", ".gz", ".service")


@dataclass
class Call:
    tool: str
    args: dict[str, Any]


@dataclass
class Plan:
    calls: list[Call] = field(default_factory=list)
    agent: str = "analysis"
    reason: str = ""
    notes: list[str] = field(default_factory=list)


# --- text preparation --------------------------------------------------------------------------


def strip_untrusted(text: str) -> tuple[str, list[str]]:
    """The task without injected instructions or quoted data; and notes on what was dropped."""
    notes: list[str] = []
    intro = _DATA_INTRO.search(text)
    if intro:
        # The quoted (or rest-of-sentence) material after "the ticket says:" is data; what the
        # operator writes after it still counts.
        rest = text[intro.end() :]
        quoted = re.match(r"\s*([\"'“])(.*?)([\"'”])", rest, re.DOTALL)
        if quoted:
            rest = rest[quoted.end() :]
        else:
            sentence_end = re.search(r"[.;!?\n]", rest)
            rest = rest[sentence_end.end() :] if sentence_end else ""
        text = text[: intro.start()] + " " + rest
        notes.append("quoted material was read as data, not as instructions")
    match = _INJECTION.search(text)
    if match:
        # Keep the sentence up to the marker; everything after it is data.
        text = text[: match.start()]
        notes.append("ignored instructions embedded in the task text (treated as data)")

    # Quoted material is data unless it is the command to run.
    def _quoted(m: re.Match[str]) -> str:
        before = text[max(0, m.start() - 40) : m.start()].lower()
        if re.search(r"\b(run|execute|exec|command|cmd|type|do)\b\s*:?\s*$", before):
            return m.group(0)
        if re.search(
            r"(user[- ]?agent|ua|string|named|called|matching|containing)\s*:?\s*$", before
        ):
            return m.group(0)
        return " "

    text = re.sub(r"\"[^\"]{12,}\"|'[^']{12,}'|“[^”]{12,}”", _quoted, text)
    return text, notes


@functools.lru_cache(maxsize=4096)
def _correct(low: str) -> str | None:
    if len(low) < 5 or low in _VOCAB_SET:
        return None
    pool = [w for w in _VOCAB if abs(len(w) - len(low)) <= 2]
    close = difflib.get_close_matches(low, pool, n=1, cutoff=0.79)
    if not close:
        return None
    cand = close[0]
    if _stem(low) == _stem(cand):
        return None  # an inflection (changed/changes, minute/minutes), not a typo
    return cand


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "e", "ion", "ly", "er"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def fix_typos(text: str) -> str:
    def fix(m: re.Match[str]) -> str:
        return _correct(m.group(0).lower()) or m.group(0)

    return re.sub(r"(?<![\w.-])[A-Za-z][A-Za-z-]{3,}[A-Za-z](?![\w.-])", fix, text)


def _has(pattern: str, text: str) -> bool:
    return re.search(pattern, text, re.IGNORECASE) is not None


# --- entities ----------------------------------------------------------------------------------


def find_addresses(text: str) -> list[str]:
    """IPv4/IPv6 addresses and CIDRs, in order of appearance."""
    found: list[tuple[int, str]] = []
    for m in _IPV4.finditer(text):
        value = m.group(1) + (m.group(2) or "")
        try:
            if m.group(2):
                ipaddress.ip_network(value, strict=False)
            else:
                ipaddress.ip_address(value)
        except ValueError:
            continue
        found.append((m.start(), value))
    for m in _IPV6.finditer(text):
        raw = m.group(1)
        if raw.count(":") < 2 or not re.search(r"[0-9a-fA-F]", raw):
            continue
        value = raw + (m.group(2) or "")
        try:
            if m.group(2):
                ipaddress.ip_network(value, strict=False)
            else:
                ipaddress.ip_address(raw)
        except ValueError:
            continue
        found.append((m.start(), value.lower()))
    return [v for _, v in sorted(found)]


def find_hosts(text: str, world: World) -> list[str]:
    site_names = {s["name"].lower() for s in world.sites}
    hosts = []
    for m in _HOST.finditer(text.lower()):
        host = m.group(1)
        if host in site_names or host.endswith(_FILE_EXT) or re.fullmatch(r"[\d.]+", host):
            continue
        if host.split(".")[-1] in {"d", "conf", "service", "sh"}:
            continue
        hosts.append(host)
    return hosts


def _server_aliases(world: World) -> list[tuple[str, int]]:
    aliases: list[tuple[str, int]] = []
    role_count: dict[str, list[int]] = {}
    for server in world.servers:
        name = str(server["name"]).lower()
        sid = int(server["id"])
        parts = name.split("-")
        variants = {name, name.replace("-", " "), name.replace("-", ""), name.replace("-", "_")}
        if len(parts) >= 2:
            rest = parts[1:]
            variants |= {"-".join(rest), " ".join(rest), "".join(rest)}
            if rest[-1].isdigit():
                n = str(int(rest[-1]))
                short = [*rest[:-1], n]
                variants |= {"-".join(short), " ".join(short), "".join(short)}
                full = [*parts[:-1], n]
                variants |= {"-".join(full), " ".join(full)}
        if server.get("host"):
            variants.add(str(server["host"]).lower())
        aliases += [(v, sid) for v in variants if len(v) >= 3]
        for word in [*parts, *[str(t).lower() for t in server.get("tags", [])]]:
            if not word.isdigit():
                role_count.setdefault(word, []).append(sid)
    synonyms = {
        "db": ["database", "db server", "database server", "db box", "db host"],
        "staging": ["staging", "staging server", "staging box", "stage"],
        "app": ["app server"],
        "web": [],
    }
    for word, ids in role_count.items():
        unique = sorted(set(ids))
        if len(unique) == 1 and word not in {"prod", "production", "01", "02"}:
            aliases.append((word, unique[0]))
            aliases += [(s, unique[0]) for s in synonyms.get(word, [])]
    aliases.sort(key=lambda a: -len(a[0]))
    return aliases


_MATCHERS: dict[tuple[Any, ...], tuple[re.Pattern[str] | None, dict[str, int]]] = {}


def _alias_matcher(world: World) -> tuple[re.Pattern[str] | None, dict[str, int]]:
    key = tuple(
        (s["id"], s["name"], s.get("host"), tuple(s.get("tags") or ())) for s in world.servers
    )
    cached = _MATCHERS.get(key)
    if cached is None:
        aliases = _server_aliases(world)
        by_alias: dict[str, int] = {}
        for alias, sid in aliases:
            by_alias.setdefault(alias, sid)
        pattern = (
            re.compile(
                r"(?<![\w.-])(" + "|".join(re.escape(a) for a, _ in aliases) + r")(?![\w-]|\.\d)"
            )
            if aliases
            else None
        )
        if len(_MATCHERS) > 64:
            _MATCHERS.clear()
        cached = _MATCHERS[key] = (pattern, by_alias)
    return cached


def find_servers(text: str, world: World) -> list[int]:
    """Server ids mentioned (by name, alias, id or address), in order of appearance."""
    low = text.lower()
    hits: list[tuple[int, int]] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= a or start >= b for a, b in taken)

    for m in re.finditer(r"\bserver\s*(?:id\s*|#\s*|number\s*)?(\d+)\b", low):
        sid = int(m.group(1))
        if any(int(s["id"]) == sid for s in world.servers):
            hits.append((m.start(), sid))
            taken.append(m.span())
    pattern, by_alias = _alias_matcher(world)
    if pattern is not None:
        # One alternation, longest aliases first: leftmost-longest non-overlapping matches.
        for m in pattern.finditer(low):
            if free(*m.span()):
                hits.append((m.start(), by_alias[m.group(1)]))
                taken.append(m.span())
    names = {str(s["name"]).lower(): int(s["id"]) for s in world.servers}
    for m in re.finditer(r"\b[a-z]+-[a-z]+-?\d+\b", low):
        if not free(*m.span()):
            continue
        close = difflib.get_close_matches(m.group(0), list(names), n=1, cutoff=0.8)
        if close:
            hits.append((m.start(), names[close[0]]))
            taken.append(m.span())
    seen: list[int] = []
    for _, sid in sorted(hits):
        if sid not in seen:
            seen.append(sid)
    if not seen and _has(
        r"\b(all|every|each|both)\s+(of\s+the\s+)?(prod(uction)?\s+)?web\s*(servers|"
        r"nodes|boxes|hosts)",
        low,
    ):
        seen = [int(s["id"]) for s in world.servers if "web" in str(s["name"])]
    return seen


def find_sites(text: str, world: World) -> list[int]:
    low = text.lower()
    hits: list[tuple[int, int]] = []
    for m in re.finditer(r"\bsite\s*(?:id\s*|#\s*)?(\d+)\b", low):
        sid = int(m.group(1))
        if any(int(s["id"]) == sid for s in world.sites):
            hits.append((m.start(), sid))
    for site in world.sites:
        name = str(site["name"]).lower()
        sid = int(site["id"])
        label = name.split(".")[0]
        patterns = [re.escape(name)]
        if label == "api":
            patterns.append(r"\bapi\s+(site|website|domain|frontend|gateway)\b")
            patterns.append(r"\bthe\s+api\b(?!\s+key)")
            patterns.append(r"(?<![\w.-])api\b(?![.-])(?!\s*(keys?|tokens?|calls?|version|docs))")
        else:
            patterns.append(rf"\b{re.escape(label)}\b(?!\.)")
        if label == "shop":
            patterns.append(r"\b(web\s?shop|store(front)?|e-?commerce\s+site|checkout\s+site)\b")
        if label == "blog":
            patterns.append(r"\bblog\w*\b")
        for p in patterns:
            for m in re.finditer(p, low):
                hits.append((m.start(), sid))
    seen: list[int] = []
    for _, sid in sorted(hits):
        if sid not in seen:
            seen.append(sid)
    if not seen and _has(r"\b(all|every|each)\s+(of\s+(the|our)\s+)?(our\s+)?(web)?sites?\b", low):
        seen = [int(s["id"]) for s in world.sites]
    return seen


def find_duration(text: str) -> tuple[bool, float | None]:
    """(found, hours): hours None means permanent."""
    low = text.lower()
    if _has(
        r"\b(permanent(ly)?|indefinite(ly)?|forever|until further notice|for good|"
        r"no expiry|no expiration|never expire)\b",
        low,
    ):
        return True, None
    m = re.search(
        r"(\d+(?:\.\d+)?)\s*-?\s*(minutes?|mins?|hours?|hrs?|h|days?|d|weeks?|w|"
        r"months?)\b",
        low,
    )
    if m:
        unit = m.group(2).rstrip("s") if m.group(2) not in {"hrs", "mins"} else m.group(2)
        unit = {
            "minute": "minute",
            "hour": "hour",
            "day": "day",
            "week": "week",
            "month": "month",
        }.get(unit, unit)
        return True, _round(float(m.group(1)) * _UNIT_HOURS.get(unit, 1))
    words = "|".join(sorted((re.escape(w) for w in _NUMBER_WORDS), key=len, reverse=True))
    m = re.search(rf"\b({words})[\s-]+(minutes?|hours?|days?|weeks?|months?)\b", low)
    if m:
        unit = m.group(2).rstrip("s")
        return True, _round(_NUMBER_WORDS[m.group(1)] * _UNIT_HOURS[unit])
    m = re.search(r"\b(?:the\s+)?next\s+(hour|day|week|month)\b", low)
    if m:
        return True, float(_UNIT_HOURS[m.group(1)])
    if _has(r"\b(overnight)\b", low):
        return True, 12.0
    if _has(r"\b(for the day|until tomorrow|for today)\b", low):
        return True, 24.0
    return False, None


def _round(hours: float) -> float:
    return float(int(hours)) if float(hours).is_integer() else round(hours, 4)


def find_country(text: str) -> str | None:
    found = find_countries(text)
    return found[0] if found else None


def find_countries(text: str) -> list[str]:
    """ISO 3166 codes of the countries named, in order of appearance."""
    low = text.lower()
    hits: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for name in sorted(COUNTRIES, key=len, reverse=True):
        for m in re.finditer(rf"\b{re.escape(name)}\b", low):
            if any(not (m.end() <= a or m.start() >= b) for a, b in taken):
                continue
            if name in {"indian", "turkey", "the us", "america", "american"} and not _has(
                r"(traffic|requests|ips|visitors|from|country|geo)", low
            ):
                continue
            hits.append((m.start(), COUNTRIES[name]))
            taken.append(m.span())
    code_match = re.search(
        r"\b(?:country(?:\s+code)?|geo(?:-?block)?|iso)\s*:?\s*([A-Z]{2})\b", text
    )
    if code_match:
        hits.append((code_match.start(), code_match.group(1).upper()))
    codes: list[str] = []
    for _, code in sorted(hits):
        if code not in codes:
            codes.append(code)
    return codes


def find_on_off(text: str) -> bool | None:
    low = text.lower()
    off = re.search(
        r"\b(disable|disabling|turn(ing)?\s+off|switch(ing)?\s+off|deactivate|"
        r"stand\s+down|drop|lower|relax|lift|remove|stop|off|kill|end|exit|"
        r"take\s+(\S+\s+){1,3}out\s+of|no\s+longer)\b",
        low,
    )
    on = re.search(
        r"\b(enable|enabling|turn(ing)?\s+on|switch(ing)?\s+on|activate|engage|"
        r"raise|put\s+\w+(\.\w+)*\s+(in|into|under)|mode\s+on|on\s*$|on\s+(?=please|now)|"
        r"start|lock\s*down|harden|"
        r"under\s+attack|protect)\b",
        low,
    )
    if off and on:
        return on.start() < off.start()
    if off:
        return False
    if on:
        return True
    return None


def find_dry_run(text: str) -> bool:
    return _has(
        r"\b(dry[\s-]?run|simulat\w*|what\s+would|without\s+(making|applying)\s+"
        r"(any\s+)?changes|preview|test\s+run|don'?t\s+actually|do\s+not\s+actually|"
        r"plan\s+only|just\s+show|no[\s-]?op|rehearse|trial\s+run|check\s+mode)\b",
        text,
    )


def find_service(text: str) -> str | None:
    low = text.lower()
    best: tuple[int, str] | None = None
    for svc in sorted(SERVICES, key=len, reverse=True):
        m = re.search(rf"(?<![\w-]){re.escape(svc)}(?![\w-])", low)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), SERVICE_ALIASES.get(svc, svc))
    if best:
        return best[1]
    for alias, name in SERVICE_ALIASES.items():
        if len(alias) > 4 and re.search(rf"\b{re.escape(alias)}\b", low):
            return name
    m = re.search(
        r"\b(?:restart|bounce|reload|recycle|kick)\s+(?:the\s+)?([a-z][\w.-]+)"
        r"(?:\s+(?:service|daemon|process|unit))",
        low,
    )
    if m:
        return m.group(1)
    m = re.search(r"\b([a-z][\w.-]+)\s+(?:service|daemon|unit)\b", low)
    if m and m.group(1) not in {"the", "a", "that", "this", "web", "every", "each"}:
        return m.group(1)
    return None


def find_package(text: str) -> str | None:
    low = text.lower()
    best: tuple[int, str] | None = None
    for pkg in sorted(PACKAGES, key=len, reverse=True):
        m = re.search(rf"(?<![\w-]){re.escape(pkg)}(?![\w-])", low)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), pkg)
    if best:
        return best[1]
    m = re.search(
        r"\b(?:patch|upgrade|update)\s+(?:the\s+)?(?:package\s+)?([a-z][\w.+-]+)"
        r"(?:\s+package)?",
        low,
    )
    if m and m.group(1) not in {"the", "all", "packages", "package", "server", "servers", "on"}:
        return m.group(1)
    m = re.search(r"\bpackage\s+([a-z][\w.+-]+)", low)
    return m.group(1) if m else None


def find_explicit_command(text: str) -> str | None:
    for pattern in (r"`([^`]+)`", r"\"([^\"]+)\"", r"'([^']+)'", r"“([^”]+)”"):
        for m in re.finditer(pattern, text):
            before = text[max(0, m.start() - 50) : m.start()].lower()
            if re.search(r"\b(run|execute|exec|command|cmd|type|do|invoke|issue)\b", before):
                return m.group(1).strip()
    found = re.search(
        r"\b(?:run|execute|exec)\s+(?:the\s+command\s+)?:?\s*"
        r"((?:sudo\s+)?(?:uptime|df|free|ps|ls|du|whoami|hostname|uname|who|w|ss|"
        r"netstat|journalctl|tail|head|systemctl|docker|ip|date|id|lsblk|vmstat|"
        r"iostat|cat|rm|curl|wget|apt|apt-get|yum|reboot|shutdown|kill|pkill|"
        r"service|chmod|chown|mv|cp|echo|nproc|top)\b[^\n;.]*?)"
        r"(?=\s+on\s+|\s+against\s+|\s+at\s+|\s*[.;\n]|\s*$)",
        text,
        re.IGNORECASE,
    )
    if found:
        return found.group(1).strip()
    return None


def inspection_command(text: str) -> str | None:
    """A read-only command for plain-language inspection requests."""
    low = text.lower()
    svc = find_service(low)
    if (
        _has(r"\b(logs?|journal)\b", low)
        and svc
        and _has(
            r"\b(show|tail|read|look|check|"
            r"see|view|last|recent|print|get)",
            low,
        )
    ):
        return f"journalctl -u {svc} -n 100 --no-pager"
    if (
        svc
        and _has(
            r"\b(is\s+\w+\s+running|status\s+of|running\?|is\s+it\s+up|alive|"
            r"service\s+status|check\s+(the\s+)?(status|whether))",
            low,
        )
        and not _has(r"\brestart", low)
    ):
        return f"systemctl status {svc}"
    if _has(
        r"\b(disk\s+(usage|space|usage)|free\s+space|how\s+full|space\s+left|storage\s+"
        r"usage|disk\s+is|df\b|filesystem\s+usage|partition)",
        low,
    ) and not _has(r"\b(clear|free\s+up|clean|reclaim|cleanup|delete|purge|make\s+room)", low):
        return "df -h"
    if _has(r"\b(memory|ram|swap)\b", low):
        return "free -m"
    if _has(
        r"\b(uptime|load\s+average|load\s+avg|how\s+long\s+.*\s+up|system\s+load|"
        r"\bload\b)",
        low,
    ):
        return "uptime"
    if _has(r"\b(processes|top\s+cpu|what'?s\s+running|cpu\s+hog|cpu\s+usage)\b", low):
        return "ps aux"
    if _has(r"\b(listening\s+ports|open\s+ports|ports\s+open|sockets)\b", low):
        return "ss -tulpn"
    if _has(r"\b(kernel\s+version|os\s+version|uname)\b", low):
        return "uname -a"
    if _has(r"\b(who\s+is\s+logged|logged[\s-]in\s+users|who'?s\s+logged)", low):
        return "who"
    if _has(r"\b(containers?\s+running|running\s+containers|docker\s+containers)\b", low):
        return "docker ps"
    return None


# --- intents -----------------------------------------------------------------------------------

_RELEASE = (
    r"\b(unblock|un-?block|unban|un-?ban|release|lift\s+(\S+\s+)?(quarantine|block|ban)|"
    r"remove\s+(\S+\s+)?(quarantine|block|ban)|un-?quarantine|let\s+\S+\s+back|"
    r"restore\s+access|get\s+(\S+\s+)?out\s+of\s+(quarantine|jail)|pardon|free\s+up\s+\d|take\s+\S+\s+off\s+(the\s+)?"
    r"(quarantine|block\s*list|blacklist)|end\s+(the\s+)?quarantine)"
)
_QUARANTINE = (
    r"\b(quarantin\w*|block\w*|ban|bann\w*|isolat\w*|blacklist\w*|blocklist\w*|"
    r"cut\s+off|drop\s+(all\s+)?(traffic|packets|connections)|shut\s+out|deny|"
    r"lock\s+(\S+\s+)?out|jail|contain|firewall\s+off|kick\s+(\S+\s+)?out|"
    r"keep\s+(\S+\s+)?(out|away)|on\s+ice|can'?t\s+(reach|access|connect)|"
    r"shut\s+\S+\s+out|deny\s+access|throw\s+\S+\s+in\s+quarantine|"
    r"stop\s+(all\s+)?(traffic|requests|connections))"
)
_RULE_WORDS = r"\b(rule|waf|vaultshield|vault\s+shield|firewall\s+rule|filter)\b"
_SHIELD = r"\b(shield(\s*mode)?|under[\s-]attack\s+mode|lock\s*down|lockdown)\b"


def _action_of(text: str) -> str:
    if _has(r"\b(challeng\w*|captcha|proof[\s-]of[\s-]work|js\s+challenge)\b", text):
        return "challenge"
    if _has(
        r"\b(log[\s-]only|just\s+log|only\s+log|monitor\s+only|observe|log\s+mode|"
        r"log\s+them|log\s+but)\b",
        text,
    ):
        return "log"
    return "block"


def _priority_of(text: str) -> int | None:
    m = re.search(r"\bpriority\s*(?:of\s*|=\s*|:\s*)?(\d+)\b", text, re.IGNORECASE)
    return int(m.group(1)) if m else None


def _reason_of(text: str) -> str | None:
    m = re.search(
        r"\b(?:because|due\s+to|reason\s*:?|for\s+(?=(?:brute|credential|port|"
        r"scan|ddos|spam|abuse|suspicious|malicious|attack|sql|exploit)))\s*(.+?)"
        r"(?=\s+(?:for\s+the\s+next|for\s+\d|permanently|and\s+then|then)\b|[.;]|$)",
        text,
        re.IGNORECASE,
    )
    if m:
        return m.group(1).strip()[:200] or None
    m = re.search(
        r"\b(brute[\s-]?forc\w*|credential\s+stuffing|port\s+scann?\w*|ddos\w*|"
        r"scrap\w+|spam\w*|sql\s+injection|exploit\s+attempts?|malicious|"
        r"suspicious|attack\w*|c2|botnet|phishing|malware)\b",
        text,
        re.IGNORECASE,
    )
    return m.group(0) if m else None


def _rate(text: str) -> str | None:
    m = re.search(
        r"(\d+)\s*(?:requests?|reqs?|hits|calls)?\s*(?:/|per|a|an|each)\s*"
        r"(second|sec|s|minute|min|m|hour|hr|h)s?\b",
        text,
        re.IGNORECASE,
    )
    if not m:
        return None
    unit = {
        "second": "sec",
        "sec": "sec",
        "s": "sec",
        "minute": "min",
        "min": "min",
        "m": "min",
        "hour": "hour",
        "hr": "hour",
        "h": "hour",
    }[m.group(2).lower()]
    return f"{m.group(1)}/{unit}"


def _user_agent(text: str) -> str | None:
    m = re.search(
        r"(?:user[\s-]?agents?|\bua\b|bot|crawler|scanner|client)\s*(?:string\s*)?"
        r"(?:named|called|matching|containing|of|like|:)?\s*[\"'`“]([^\"'`”]+)"
        r"[\"'`”]",
        text,
        re.IGNORECASE,
    )
    if m:
        return m.group(1).strip()
    m = re.search(
        r"[\"'`“]([^\"'`”]+)[\"'`”]\s*(?:user[\s-]?agent|bot|crawler|scanner)", text, re.IGNORECASE
    )
    if m:
        return m.group(1).strip()
    low = text.lower()
    for bot in KNOWN_BOTS:
        if re.search(rf"(?<![\w-]){re.escape(bot)}(?![\w-])", low):
            return bot
    return None


def _split_clauses(text: str) -> list[str]:
    verbs = (
        r"(?:quarantine|block|ban|unblock|release|enable|disable|turn|switch|put|add|create|"
        r"restart|reboot|bounce|rotate|clear|free|clean|patch|upgrade|update|collect|gather|"
        r"run|execute|check|show|list|give|tell|summari[sz]e|report|get|fetch|look|"
        r"pull|find|what|which|how|is|are|lift|let|throttle|rate|rate-limit|geo-?block|"
        r"challenge|set|activate|deactivate|isolate|also|then|investigate|review|audit|"
        r"query|search|display|make|apply|install|drop|raise|lower|engage|stop|start|"
        r"remove|unban|see|count|verify|confirm|tail|read|do)"
    )
    parts = re.split(
        rf"(?:[.;!?\n]+\s+|[.;!?\n]+$|,?\s+and\s+then\s+|,?\s+then\s+|,\s+and\s+"
        rf"(?={verbs}\b)|\s+and\s+(?={verbs}\b)|,\s+(?={verbs}\b)|\s+also\s+|"
        rf"\s+plus\s+|\s+after\s+that\s+)",
        text,
        flags=re.IGNORECASE,
    )
    return [p.strip() for p in parts if p and p.strip() and len(p.strip()) > 1]


def plan(task: str, world: World, *, server_id: int | None = None) -> Plan:
    """The calls a task asks for, with arguments, and the agent that owns them."""
    cleaned, notes = strip_untrusted(task)
    text = fix_typos(cleaned)
    result = Plan(notes=notes)
    default_servers = find_servers(text, world) or ([server_id] if server_id else [])
    default_sites = find_sites(text, world)
    duration_found, duration = find_duration(text)
    clauses = _split_clauses(text) or [text]
    whole_targets = find_addresses(text)
    whole_targets += [h for h in find_hosts(text, world) if h not in whole_targets]
    last_servers = default_servers
    for clause in clauses:
        servers_here = find_servers(clause, world)
        if servers_here:
            last_servers = servers_here
        for call in _clause_calls(
            clause,
            text,
            world,
            last_servers or default_servers,
            default_sites,
            duration_found,
            duration,
            whole_targets,
        ):
            if not any(c.tool == call.tool and c.args == call.args for c in result.calls):
                result.calls.append(call)
    result.agent, result.reason = route(text if result.calls else fix_typos(task), result.calls)
    return result


def _clause_calls(
    clause: str,
    whole: str,
    world: World,
    servers: list[int],
    default_sites: list[int],
    duration_found: bool,
    duration: float | None,
    whole_targets: list[str],
) -> list[Call]:
    low = clause.lower()
    calls: list[Call] = []
    addresses = find_addresses(clause)
    hosts = find_hosts(clause, world)
    targets = addresses + [h for h in hosts if h not in addresses]
    if not targets:  # "...from 192.0.2.7. Quarantine that address": the task's targets
        targets = list(whole_targets)
        addresses = [t for t in targets if find_addresses(t)]
    sites = find_sites(clause, world) or (
        default_sites if _has(r"\b(it|its|the\s+site|that\s+site|there)\b", low) else []
    )
    is_question = _has(r"^\s*(is|are|was|were|has|have|did|do|does)\b", low) or _has(
        r"\b(is|are)\s+\S+\s+(quarantined|blocked|banned)\b", low
    )

    # 1. Release a quarantine.
    if _has(_RELEASE, low) and (targets or _has(r"quarantine\s*(id\s*)?#?\s*\d+", low)):
        qid = re.search(r"quarantine\s*(?:id\s*)?#\s*(\d+)|quarantine\s+id\s*(\d+)", low)
        if qid and not targets:
            return [
                Call("release_quarantine", {"quarantine_id": int(qid.group(1) or qid.group(2))})
            ]
        return [Call("release_quarantine", {"target": t}) for t in targets]

    # 2. VaultShield rules.
    country = find_country(clause)
    rate = _rate(clause)
    if rate and _has(r"\b(rate[\s-]?limit\w*|throttl\w*|limit|cap|slow\s+down)\b", low):
        key = targets[0] if targets else "*"
        args: dict[str, Any] = {
            "type": "rate_limit",
            "value": f"{key} {rate}",
            "action": _action_of(clause),
        }
        if (p := _priority_of(clause)) is not None:
            args["priority"] = p
        return [Call("add_vaultshield_rule", args)]
    blocky = _has(
        _QUARANTINE + r"|\b(challeng\w*|captcha|geo[\s-]?block|refuse|reject|"
        r"filter|stop)\b|(ip|geo|user_agent)_block",
        low,
    )
    explicit = re.search(r"\b(ip_block|geo_block|user_agent_block)\b", low)
    if explicit and explicit.group(1) == "ip_block" and addresses:
        return [
            Call(
                "add_vaultshield_rule",
                {"type": "ip_block", "value": a, "action": _action_of(clause)},
            )
            for a in addresses
        ]
    if country and blocky and not addresses:
        for code in find_countries(clause):
            args = {"type": "geo_block", "value": code, "action": _action_of(clause)}
            if (p := _priority_of(clause)) is not None:
                args["priority"] = p
            calls.append(Call("add_vaultshield_rule", args))
        return calls
    ua = (
        _user_agent(clause)
        if _has(
            r"\b(user[\s-]?agents?|\bua\b|bots?|crawlers?|scanners?|"
            r"scrapers?|clients?)\b",
            low,
        )
        else None
    )
    if ua and blocky:
        args = {"type": "user_agent_block", "value": ua, "action": _action_of(clause)}
        if (p := _priority_of(clause)) is not None:
            args["priority"] = p
        return [Call("add_vaultshield_rule", args)]
    if (
        addresses
        and (blocky or (_has(_RULE_WORDS, low) and _action_of(clause) != "block"))
        and (_has(_RULE_WORDS, low) or _action_of(clause) != "block")
        and not _has(r"quarantin", low)
    ):
        for address in addresses:
            args = {"type": "ip_block", "value": address, "action": _action_of(clause)}
            if (p := _priority_of(clause)) is not None:
                args["priority"] = p
            calls.append(Call("add_vaultshield_rule", args))
        return calls

    # 3. Quarantine.
    if (
        targets
        and _has(_QUARANTINE, low)
        and not is_question
        and not _has(r"\b(was|were|why|who)\s+\S*\s*(blocked|quarantined|banned)\b", low)
    ):
        for target in targets:
            args = {"target": target}
            found_here, hours = find_duration(clause)
            if found_here or duration_found:
                args["duration_hours"] = hours if found_here else duration  # type: ignore[assignment]
            reason = _reason_of(clause)
            if reason:
                args["reason"] = reason
            calls.append(Call("quarantine_target", args))
        return calls

    # 4. Shield mode.
    if _has(_SHIELD, low):
        enabled = find_on_off(re.sub(_SHIELD, " ", low, flags=re.IGNORECASE))
        if _has(r"\b(status|is\s+shield|whether)\b", low) and enabled is None:
            return [Call("get_site_health", {"site_id": s}) for s in sites]
        if enabled is None:
            enabled = True
        targets_sites = sites or default_sites
        if not targets_sites and _has(r"\b(all|every|each)\b", low):
            targets_sites = [int(s["id"]) for s in world.sites]
        return [Call("set_shield_mode", {"site_id": s, "enabled": enabled}) for s in targets_sites]

    # 5. Remediation playbooks.
    dry = find_dry_run(clause) or find_dry_run(whole)
    playbook = _playbook_intent(clause, world, whole)
    if playbook is not None:
        name, params = playbook
        targets_servers = servers or [None]  # type: ignore[list-item]
        for sid in targets_servers:
            args = {"playbook": name}
            if sid is not None:
                args["server_id"] = sid
            args["dry_run"] = dry
            if params:
                args["params"] = params
            calls.append(Call("run_playbook", args))
        return calls
    if _has(
        r"\b(list|show|what|which|available)\b.*\bplaybooks?\b|\bplaybooks?\b.*\b("
        r"available|exist|have|list)\b",
        low,
    ):
        return [Call("list_playbooks", {})]

    # 6. Commands.
    command = find_explicit_command(clause)
    if command is None and servers:
        command = inspection_command(clause)
    if (
        command is None
        and not servers
        and inspection_command(clause)
        and _has(r"\b(on|at)\s+(the\s+)?(server|box|host|machine)\b", low)
    ):
        command = None
    if command is not None and servers:
        return [Call("execute_command", {"server_id": s, "command": command}) for s in servers]

    # 7. Security reads.
    if _has(
        r"\b(threat\s*(feed|intel\w*|list|indicators?|data)|iocs?|indicators?\s+of\s+"
        r"compromise|latest\s+threats|known[\s-]bad|bad\s+ips|threat\s+landscape)\b",
        low,
    ):
        args = {}
        m = re.search(r"\b(ip|domain|url|hash|cidr)s?\b\s*(indicators|iocs|only|entries)?", low)
        if m and _has(r"\b(ip|domain|url|hash|cidr)s?\s+(indicators|iocs|only|entries)\b", low):
            args["type"] = m.group(1)
        if (n := _limit_of(low)) is not None:
            args["limit"] = n
        return [Call("get_threat_feed", args)]
    if _has(
        r"\b(vault\s?shield|waf|bot\s+protection|ddos\s+protection|protection\s+status|"
        r"rule\s+count|active\s+rules|how\s+many\s+rules|blocking\s+stats|traffic\s+stat)",
        low,
    ):
        return [Call("get_vaultshield_status", {})]

    # 8. Analysis reads.
    if _has(r"\b(incidents?|alerts?|outages?|security\s+events?|breaches)\b", low) and not _has(
        r"\b(audit|ledger)\b", low
    ):
        args = {}
        if _has(r"\b(open|unresolved|active|ongoing|current|outstanding|still\s+going)\b", low):
            args["status"] = "open"
        elif _has(r"\b(resolved|closed|fixed|past|handled)\b", low):
            args["status"] = "resolved"
        m = re.search(r"\b(critical|high|medium|low)\b", low)
        if m:
            args["severity"] = m.group(1)
        elif _has(r"\b(sev[\s-]?1|p1)\b", low):
            args["severity"] = "critical"
        elif _has(r"\b(sev[\s-]?2|p2)\b", low):
            args["severity"] = "high"
        return [Call("list_incidents", args)]
    if _has(
        r"\b(audit|ledger|who\s+(ran|did|changed|ex\w+|quarantined|released|approved)|"
        r"what\s+(changed|happened|was\s+done|actions)|change\s+history|activity\s+log|"
        r"actions\s+(taken|performed)|history\s+of|trail)\b",
        low,
    ):
        args = {}
        if servers:
            args["server_id"] = servers[0]
        if (n := _limit_of(low)) is not None:
            args["limit"] = n
        m = re.search(r"\baction\s*[=:]?\s*([a-z_]{4,})\b", low)
        if m:
            args["action"] = m.group(1)
        return [Call("query_audit_log", args)]
    if sites and _has(
        r"\b(health\w*|how\s+is|how'?s|doing|status|up|down|ok|okay|score|"
        r"prediction|threat\s+level|state|check|risk|attack\w*|threat\w*|safe|"
        r"overview|summary|report|slow)\b",
        low,
    ):
        return [Call("get_site_health", {"site_id": s}) for s in sites]
    if not sites and _has(r"\b(all|every|each)\s+(of\s+(the|our)\s+)?(web)?sites?\b", low):
        return [Call("get_site_health", {"site_id": int(s["id"])}) for s in world.sites]
    if (
        _has(
            r"\b(list|lst|show|which|what|inventory|enumerate|how\s+many)\b.*\b(servers|hosts|"
            r"machines|boxes|nodes|fleet)\b|\b(server|host)\s+(inventory|list)\b|\bfleet\b",
            low,
        )
        and not servers
    ):
        return [Call("list_servers", {})]
    if servers and _has(
        r"\b(status|up|down|reachable|online|offline|alive|health\w*|ok|"
        r"okay|responding|state|doing|ping)\b",
        low,
    ):
        return [Call("get_server_status", {"server_id": s}) for s in servers]
    return calls


def _limit_of(low: str) -> int | None:
    m = re.search(r"\b(?:last|latest|top|recent|first)\s+(\d{1,3})\b", low)
    return int(m.group(1)) if m else None


def _playbook_intent(
    clause: str, world: World, whole: str = ""
) -> tuple[str, dict[str, Any]] | None:
    low = clause.lower()
    names = [str(p["name"]) for p in world.playbooks]
    # "playbook NAME" first: in "run the playbook NAME" the other form matches "the playbook"
    for pattern in (r"\bplaybook\s+[\"'`]?([a-z][\w-]+)", r"([a-z][\w-]+)\s+playbook\b"):
        m = re.search(pattern, low)
        close = difflib.get_close_matches(m.group(1), names, n=1, cutoff=0.6) if m else []
        if close:
            return close[0], _playbook_params(close[0], clause, world)
    if _has(r"\b(restart\w*|bounce|reload|recycle|kick|cycle|re-?start)\b", low) and not _has(
        r"\b(reboot|restart)\s+(the\s+)?(server|box|host|machine)\b", low
    ):
        service = find_service(low) or (find_service(whole) if whole else None)
        if service:
            return "restart-service", {"service": service}
    if _has(
        r"\b(clear\w*|free\s+up|clean\s*up|clean\w*|reclaim|make\s+room|purge|cleanup|"
        r"low\s+on\s+disk|out\s+of\s+(disk|space)|disk\s+(is\s+)?full|running\s+out\s+of\s+"
        r"(disk|space)|disk\s+space\s+issue|free\s+some\s+space|full\s+disk)\b",
        low,
    ) and _has(r"\b(disk|space|storage|drive|partition|filesystem|room|tmp|cache)\b", low):
        return "clear-disk-space", {}
    if _has(r"\b(rotat\w*|roll\s+(\S+\s+)?(over|logs?)|truncate)\b", low) and (
        _has(r"\blogs?\b", low) or _has(r"\blogs?\b", whole)
    ):
        return "rotate-logs", {}
    if _has(r"\b(logs?\s+(are|is)\s+(huge|too\s+big|massive|enormous|growing))\b", low):
        return "rotate-logs", {}
    if _has(
        r"\b(patch\w*|upgrade|update|apply\s+(the\s+)?(security\s+)?(fix|patch|update)|"
        r"bump|cve)\b",
        low,
    ) and not _has(
        r"\b(update|upgrade)\s+(the\s+)?(rule|shield|"
        r"ticket|status)",
        low,
    ):
        package = find_package(low) or (find_package(whole) if whole else None)
        if package:
            return "patch-package", {"package": package}
    if _has(
        r"\b(diagnostic\w*|diag|debug\s+(bundle|info)|troubleshooting\s+(data|info|bundle)|"
        r"sos\s?report|support\s+bundle|gather\s+(info|data|details)|collect\s+(info|data|"
        r"details|logs))\b",
        low,
    ):
        return "collect-diagnostics", {}
    return None


# ``name=value`` or ``name="value with spaces"`` (a JSON string): how scheduled playbook runs
# (``orchestrator.schedules.task_text``) and careful operators write parameters.
_ASSIGNMENT = re.compile(r'\b([A-Za-z_][\w-]*)=("(?:[^"\\]|\\.)*"|[^\s"]+)')


def declared_params(world: World, playbook: str) -> dict[str, str]:
    """Name -> type of the parameters a playbook declares (the playbook service lists specs,
    the offline defaults only names, taken as strings)."""
    types: dict[str, str] = {}
    for p in world.playbooks:
        if p.get("name") != playbook:
            continue
        for spec in p.get("params") or []:
            if isinstance(spec, dict) and spec.get("name"):
                types[str(spec["name"])] = str(spec.get("type") or "string")
            elif isinstance(spec, str):
                types[spec] = "string"
    return types


def _playbook_params(name: str, clause: str, world: World) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if name == "restart-service":
        svc = find_service(clause)
        params = {"service": svc} if svc else {}
    elif name == "patch-package":
        pkg = find_package(clause)
        params = {"package": pkg} if pkg else {}
    declared = declared_params(world, name)
    for key, raw in _ASSIGNMENT.findall(clause):
        if key not in declared:
            continue
        if raw.startswith('"'):
            try:
                value: Any = json.loads(raw)
            except ValueError:
                continue
        elif declared[key] == "boolean" and raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            value = raw  # integers stay text: the playbook service checks and converts them
        params[key] = value  # explicit assignments win over what was read from the prose
    return params


_SECURITY_WORDS = (
    r"\b(threat|attack\w*|malicious|suspicious|intru\w+|breach|ddos|bots?|"
    r"exploit|hack\w*|compromis\w*|block\w*|quarantin\w*|shield|waf|firewall|"
    r"vaultshield|eshield|ioc|phishing|malware|brute)\b"
)
_REMEDIATION_WORDS = (
    r"\b(fix|repair|restart|remediat\w*|recover|resolve\s+the|reboot|clean|"
    r"patch|rotate|run|execute|command|playbook|disk|memory|service)\b"
)
_ANALYSIS_WORDS = (
    r"\b(report|summari[sz]e|summary|analy[sz]\w*|trend|history|audit|why|who|"
    r"what\s+happened|explain|review|list|show|how\s+many|statistics|stats)\b"
)

_HOME = {
    "quarantine_target": "security",
    "release_quarantine": "security",
    "set_shield_mode": "security",
    "add_vaultshield_rule": "security",
    "get_threat_feed": "security",
    "get_vaultshield_status": "security",
    "execute_command": "remediation",
    "run_playbook": "remediation",
    "list_playbooks": "remediation",
    "query_audit_log": "analysis",
    "list_incidents": "analysis",
    "get_site_health": "analysis",
    "list_servers": "analysis",
    "get_server_status": "analysis",
}
_SHARED = {
    "get_site_health": {"analysis", "security"},
    "list_incidents": {"analysis", "security"},
    "get_threat_feed": {"security", "analysis"},
    "get_vaultshield_status": {"security", "analysis"},
    "list_servers": {"remediation", "analysis"},
    "get_server_status": {"remediation", "analysis"},
}


def route(text: str, calls: list[Call]) -> tuple[str, str]:
    """The agent for a task, and why."""
    if calls:
        exclusive = [c.tool for c in calls if c.tool not in _SHARED]
        if exclusive:
            agent = _HOME[exclusive[0]]
            return agent, f"{exclusive[0]} is a {agent} tool"
        allowed = set.intersection(*(_SHARED[c.tool] for c in calls))
        if len(allowed) == 1:
            agent = next(iter(allowed))
            return agent, f"only the {agent} agent has {', '.join(c.tool for c in calls)}"
        home = _HOME[calls[0].tool]
        if (
            home == "analysis"
            and "security" in allowed
            and _has(
                r"\b(attack\w*|under\s+attack|threat\s+level|malicious|intru\w+|ddos|breach|"
                r"security)\b",
                text,
            )
        ):
            return "security", "read-only call with a threat focus"
        if (
            home == "security"
            and "analysis" in allowed
            and _has(r"\b(report|summari[sz]e|summary|analy[sz]\w*|trend|statistics|stats)\b", text)
        ):
            return "analysis", "read-only call asked for as a report"
        if (
            home == "analysis"
            and "remediation" in allowed
            and _has(r"\b(fix|repair|restart|remediat\w*|recover)\b", text)
        ):
            return "remediation", "status check as part of a fix"
        return home, f"{calls[0].tool} is best handled by the {home} agent"
    scores = {
        "security": len(re.findall(_SECURITY_WORDS, text, re.IGNORECASE)),
        "remediation": len(re.findall(_REMEDIATION_WORDS, text, re.IGNORECASE)),
        "analysis": len(re.findall(_ANALYSIS_WORDS, text, re.IGNORECASE)),
    }
    best = max(scores, key=lambda a: (scores[a], a == "analysis"))
    return best, f"keyword match ({scores[best]} {best} terms); no tool call identified"
