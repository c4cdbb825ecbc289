"""IP-to-country lookups for ``geo_block`` rules, from data the operator supplies.

No country database ships with ExecFlow: GeoLite2's licence forbids redistribution, and
bundling DB-IP Lite (CC BY 4.0) would need its attribution and monthly refreshes. The setting
``EXECFLOW_VAULTSHIELD_GEOIP_PATH`` names either an MMDB file (DB-IP Lite country MMDB,
GeoLite2-Country, anything ``maxminddb`` reads with a ``country.iso_code`` or ``country_code``
field) or a CSV of ``start_ip,end_ip,country_code`` rows (the DB-IP Lite CSV shape).
"""

from __future__ import annotations

import bisect
import csv
import ipaddress
from collections.abc import Callable
from pathlib import Path

import maxminddb

CountryLookup = Callable[[str], str | None]


def _mmdb_lookup(path: Path) -> CountryLookup:
    reader = maxminddb.open_database(str(path))

    def country_of(ip: str) -> str | None:
        try:
            record = reader.get(ip)
        except ValueError:  # an IPv6 address asked of an IPv4-only database
            return None
        if not isinstance(record, dict):
            return None
        country = record.get("country")
        if isinstance(country, dict) and isinstance(country.get("iso_code"), str):
            return str(country["iso_code"])
        code = record.get("country_code")
        return code if isinstance(code, str) else None

    return country_of


def _csv_lookup(path: Path) -> CountryLookup:
    tables: dict[int, tuple[list[int], list[int], list[str]]] = {4: ([], [], []), 6: ([], [], [])}
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if len(row) < 3 or row[0].startswith("#"):
                continue
            try:
                start, end = ipaddress.ip_address(row[0]), ipaddress.ip_address(row[1])
            except ValueError:
                continue  # a header line
            rows.append((start.version, int(start), int(end), row[2].strip().upper()))
    for version, start_n, end_n, code in sorted(rows):
        starts, ends, codes = tables[version]
        starts.append(start_n)
        ends.append(end_n)
        codes.append(code)

    def country_of(ip: str) -> str | None:
        addr = ipaddress.ip_address(ip)
        starts, ends, codes = tables[addr.version]
        n = int(addr)
        i = bisect.bisect_right(starts, n) - 1
        return codes[i] if i >= 0 and n <= ends[i] else None

    return country_of


def load_country_lookup(path: Path | None) -> CountryLookup | None:
    """A lookup over the file at ``path`` (.mmdb or CSV), or None when no file is configured."""
    if path is None:
        return None
    if path.suffix.lower() == ".mmdb":
        return _mmdb_lookup(path)
    return _csv_lookup(path)
