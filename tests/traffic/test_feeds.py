"""Threat feed imports through the API: each format, de-duplication, malformed feeds."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import stix2

from models.settings import Settings, configure
from tests.conftest import auth

PLAIN = """# FireHOL-style list
198.51.100.7
203.0.113.0/24 ; SBL123 (Spamhaus DROP text)
evil.example.com
2001:db8:bad::/48
44d88612fea8a8f36de82e1278abb02f
"""

SPAMHAUS_DROP_JSON = "\n".join(
    [
        json.dumps({"cidr": "192.0.2.0/24", "sblid": "SBL1", "rir": "arin"}),
        json.dumps({"cidr": "198.18.0.0/15", "sblid": "SBL2", "rir": "ripencc"}),
        json.dumps({"type": "metadata", "timestamp": 1733222400, "size": 2, "records": 2}),
    ]
)

FEODO_CSV = """################################################################
# abuse.ch Feodo Tracker Botnet C2 IP Blocklist (CSV)           #
################################################################
#
# "first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"
"2026-01-01 10:00:00","198.51.100.20","443","online","2026-12-01","QakBot"
"2026-01-02 10:00:00","198.51.100.21","8080","offline","2026-11-01","Emotet"
# Number of entries: 2
"""

URLHAUS_CSV = """id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter
1,2026-12-01 00:00:00,http://malware.example.net/x.exe,online,,malware_download,exe,,anon
"""

FEODO_JSON = json.dumps(
    [
        {"ip_address": "198.51.100.30", "port": 443, "status": "online", "malware": "Dridex"},
        {"ip_address": "198.51.100.31", "port": 447, "status": "offline", "malware": "TrickBot"},
    ]
)


def stix_bundle() -> str:
    return str(
        stix2.Bundle(
            objects=[
                stix2.Indicator(
                    pattern="[ipv4-addr:value = '198.51.100.40']",
                    pattern_type="stix",
                    valid_from="2026-01-01T00:00:00Z",
                    confidence=90,
                ),
                stix2.Indicator(
                    pattern="[domain-name:value = 'c2.example.org']",
                    pattern_type="stix",
                    valid_from="2026-01-01T00:00:00Z",
                ),
                stix2.Indicator(
                    pattern="[file:hashes.'SHA-256' = "
                    "'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855']",
                    pattern_type="stix",
                    valid_from="2026-01-01T00:00:00Z",
                ),
            ]
        ).serialize()
    )


@pytest.fixture(scope="module")
async def writer(make_key: Any) -> dict[str, str]:
    return auth(await make_key("write"))


async def imported(
    client: httpx.AsyncClient, headers: dict[str, str], content: str | None = None, **extra: Any
) -> httpx.Response:
    body = {"source": extra.pop("source", "test"), **extra}
    if content is not None:
        body["content"] = content
    return await client.post("/api/eshield/threats/import", json=body, headers=headers)


async def total(client: httpx.AsyncClient, headers: dict[str, str], type_: str = "") -> int:
    query = f"?type={type_}" if type_ else ""
    response = await client.get(f"/api/eshield/threats{query}", headers=headers)
    assert response.status_code == 200
    return int(response.json()["total"])


@pytest.mark.parametrize(
    ("content", "fmt", "count"),
    [
        (PLAIN, "plain", 5),
        (SPAMHAUS_DROP_JSON, "json", 2),
        (FEODO_CSV, "csv", 2),
        (URLHAUS_CSV, "csv", 1),
        (FEODO_JSON, "json", 2),
        ("stix", "stix", 3),
    ],
)
async def test_each_format_imports(
    client: httpx.AsyncClient, writer: dict[str, str], content: str, fmt: str, count: int
) -> None:
    text = stix_bundle() if content == "stix" else content
    response = await imported(client, writer, text, source=f"feed-{fmt}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == fmt  # detected automatically
    assert body["created"] + body["updated"] == count


async def test_types_filter_and_pagination(
    client: httpx.AsyncClient, writer: dict[str, str]
) -> None:
    await imported(client, writer, PLAIN)
    await imported(client, writer, stix_bundle(), format="stix")
    assert await total(client, writer, "domain") >= 2
    assert await total(client, writer, "hash") >= 2
    cidrs = (await client.get("/api/eshield/threats?type=cidr&limit=1", headers=writer)).json()
    assert len(cidrs["threats"]) == 1 and cidrs["threats"][0]["type"] == "cidr"
    page2 = await client.get("/api/eshield/threats?type=cidr&limit=1&offset=1", headers=writer)
    assert page2.json()["threats"][0]["id"] != cidrs["threats"][0]["id"]
    bad = await client.get("/api/eshield/threats?type=planet", headers=writer)
    assert bad.status_code == 400


async def test_reimport_deduplicates(client: httpx.AsyncClient, writer: dict[str, str]) -> None:
    first = (
        await imported(client, writer, FEODO_CSV + FEODO_CSV.splitlines()[5] + "\n", format="csv")
    ).json()
    before = await total(client, writer)
    again = (await imported(client, writer, FEODO_CSV, format="csv")).json()
    assert again["created"] == 0 and again["updated"] == 2
    assert await total(client, writer) == before
    assert first["created"] + first["updated"] == 2  # the repeated line counted once


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        ("198.51.100.50\nnot an indicator at all!\n198.51.100.51\n", "plain"),
        ('{"cidr": "198.51.100.0/24"}\n{"cidr": "198.51.100.0/24"\n', "json"),
        ('[{"ip_address": "198.51.100.52"}, {"port": 80}]', "json"),
        ("dst_ip,port\n198.51.100.53,80\n999.1.1.1,80\n", "csv"),
        ('{"type": "bundle", "id": "bundle--nope", "objects": [{"type": "indicator"}]}', "stix"),
        ("# only comments\n", "plain"),
    ],
)
async def test_malformed_feed_imports_nothing(
    client: httpx.AsyncClient, writer: dict[str, str], content: str, fmt: str
) -> None:
    before = await total(client, writer)
    response = await imported(client, writer, content, format=fmt)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["code"] in ("FEED_MALFORMED", "FEED_EMPTY")
    assert await total(client, writer) == before  # nothing half-imported


async def test_import_needs_write_scope(client: httpx.AsyncClient, make_key: Any) -> None:
    reader = auth(await make_key("read"))
    assert (await imported(client, reader, PLAIN)).status_code == 403


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Loopback is allow-listed for outbound fetches here, so a local server can serve feeds."""
    s = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=database_url,
        log_format="text",
        outbound_allowlist=["127.0.0.1"],
    )
    configure(s)
    return s


@pytest.fixture(scope="module")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("feeds")
    (root / "drop.json").write_text(SPAMHAUS_DROP_JSON.replace("192.0.2.0/24", "192.0.2.128/25"))
    (root / "broken.txt").write_text("198.51.100.77\n<html>oops</html>\n")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def finished_job(database: Any, job_id: int) -> Any:
    from models.jobs import FINAL_STATES, get_job

    for _ in range(400):
        async with database.session() as session:
            job = await get_job(session, job_id)
        if job is not None and job.status in FINAL_STATES:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("feed import job did not finish")


async def test_import_from_url_runs_as_a_job(
    client: httpx.AsyncClient, writer: dict[str, str], feed_server: str, database: Any
) -> None:
    response = await client.post(
        "/api/eshield/threats/import",
        json={"url": f"{feed_server}/drop.json", "source": "spamhaus-drop"},
        headers=writer,
    )
    assert response.status_code == 202, response.text
    job = await finished_job(database, response.json()["job_id"])
    assert job.status == "succeeded", job.error
    assert job.result["format"] == "json" and job.result["created"] + job.result["updated"] == 2
    cidrs = await client.get("/api/eshield/threats?type=cidr&limit=500", headers=writer)
    assert "192.0.2.128/25" in [t["value"] for t in cidrs.json()["threats"]]
    before = await total(client, writer)
    broken = await client.post(
        "/api/eshield/threats/import", json={"url": f"{feed_server}/broken.txt"}, headers=writer
    )
    job = await finished_job(database, broken.json()["job_id"])
    assert job.status == "failed" and await total(client, writer) == before


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/feed.txt", "http://169.254.169.254/latest", "file:///etc/passwd"]
)
async def test_import_url_refuses_private_targets(
    client: httpx.AsyncClient, writer: dict[str, str], url: str
) -> None:
    response = await client.post("/api/eshield/threats/import", json={"url": url}, headers=writer)
    assert response.status_code == 400
    assert response.json()["code"] in ("SSRF_BLOCKED", "URL_INVALID")


async def test_import_needs_exactly_one_input(
    client: httpx.AsyncClient, writer: dict[str, str]
) -> None:
    both = await imported(client, writer, PLAIN, url="https://feeds.example/x")
    assert both.status_code == 400
    assert (
        await client.post("/api/eshield/threats/import", json={}, headers=writer)
    ).status_code == 400
