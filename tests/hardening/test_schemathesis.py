"""Schemathesis against the served OpenAPI document, with a valid key of each scope.

Every operation the document lists (whatever domains are installed) is fuzzed with positive and
negative cases and three keys (read, write, admin) against a real ``execflow serve``: no response
may be a 5xx, every response must match its declared schema, and every error body must have the
error shape ``{"success": false, "message", "code"}``. Server-Sent-Event routes (``x-stream``)
are skipped: their responses never end. Bounded: a few examples per operation, no shrinking.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import KeyFactory

SCOPES = ("read", "write", "admin")
EXAMPLES = 4  # per operation, scope and generation mode
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def error_shape_problem(response: requests.Response) -> str | None:
    """Why an error response does not have the reference's error shape, or None."""
    try:
        body = response.json()
    except ValueError:
        return f"error body is not JSON: {response.text[:200]!r}"
    if not isinstance(body, dict):
        return f"error body is not an object: {body!r}"[:300]
    if body.get("success") is not False:
        return "error body lacks success=false"
    if not isinstance(body.get("message"), str) or not body["message"]:
        return "error body lacks a message"
    if not isinstance(body.get("code"), str) or not body["code"]:
        return "error body lacks a code"
    return None


def fuzz_operation(
    operation: Any, base: str, keys: dict[str, str], failures: list[str], session: requests.Session
) -> int:
    """Fuzz one operation with every key; append readable failures; return the calls made."""
    calls = [0]
    for mode in MODES:
        for scope, key in keys.items():
            _fuzz(operation, mode, scope, key, base, failures, session, calls)
    return calls[0]


def _fuzz(
    operation: Any,
    mode: schemathesis.GenerationMode,
    scope: str,
    key: str,
    base: str,
    failures: list[str],
    session: requests.Session,
    calls: list[int],
) -> None:
    headers = {"Authorization": f"Bearer {key}"}

    @hsettings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        merged = {**(case.headers or {}), **headers}
        try:
            response = case.call(base_url=base, headers=merged, session=session, timeout=30)
        except requests.RequestException as exc:
            failures.append(f"{case.method} {case.formatted_path} [{scope}]: {exc}")
            return
        calls[0] += 1
        label = (
            f"{case.method} {case.formatted_path} [{scope}, {mode.value}] -> {response.status_code}"
        )
        if response.status_code >= 400:
            problem = error_shape_problem(response)
            if problem:
                failures.append(f"{label}: {problem}")
        try:
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis: a FailureGroup
            body = {"query": case.query, "body": case.body}
            failures.append(f"{label}: {str(exc)[:600]} sent={json.dumps(body, default=str)[:300]}")

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to negate (an operation without parameters or body)
    except (Exception, BaseExceptionGroup) as exc:  # a failure hypothesis re-raised: report all
        failures.append(
            f"{operation.method.upper()} {operation.path} [{scope}, {mode.value}]: {str(exc)[:600]}"
        )


async def test_every_operation_survives_fuzzing(
    served: tuple[str, Path], make_key: KeyFactory
) -> None:
    base, _log = served
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("x-stream"):
            continue
        operations.append(operation)
    assert operations, "the served document lists no operations"

    failures: list[str] = []
    total = 0
    with requests.Session() as session:
        for operation in operations:
            # Fresh keys per operation: a fuzzed DELETE /api/keys/{id} may revoke earlier ones.
            keys = {scope: await make_key(scope, name=f"fuzz-{scope}") for scope in SCOPES}
            total += await asyncio.to_thread(
                fuzz_operation, operation, base, keys, failures, session
            )
    assert total >= len(operations)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])


@pytest.mark.parametrize("path", ["/api/does-not-exist", "/api/v1/servers/not-a-number"])
async def test_unknown_and_malformed_paths_have_error_shape(
    served: tuple[str, Path], make_key: KeyFactory, path: str
) -> None:
    key = await make_key("admin")

    def call() -> requests.Response:
        return requests.get(base + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    base, _log = served
    response = await asyncio.to_thread(call)
    assert 400 <= response.status_code < 500
    assert error_shape_problem(response) is None


ODD_IDS = ["0", "-1", str(2**31), str(2**63), str(2**64 + 1), "abc", "1e3", "1.5", "%00", "9" * 40]


async def test_odd_path_ids_are_client_errors(
    served: tuple[str, Path], make_key: KeyFactory
) -> None:
    """Deterministic boundaries hypothesis may miss: every integer path parameter of every
    operation, given zero, negatives, values past int32/int64 and non-numbers: never a 5xx,
    and any error in the error shape (0 may be valid, e.g. a ledger sequence number)."""
    base, _log = served
    admin = await make_key("admin", name="odd-ids")
    document = await asyncio.to_thread(
        lambda: requests.get(f"{base}/api/openapi.json", timeout=30).json()
    )
    problems: list[str] = []
    probes = 0

    def probe(method: str, path: str) -> None:
        nonlocal probes
        kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {admin}"}, "timeout": 30}
        if method in ("post", "put", "patch"):
            kwargs["json"] = {}
        response = requests.request(method.upper(), base + path, **kwargs)
        probes += 1
        if response.status_code >= 500:
            problems.append(f"{method.upper()} {path} -> {response.status_code}")
        elif response.status_code >= 400 and (problem := error_shape_problem(response)):
            problems.append(f"{method.upper()} {path} -> {response.status_code}: {problem}")

    for template, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or operation.get("x-stream"):
                continue
            params = [p for p in operation.get("parameters", []) if p.get("in") == "path"]
            ints = [p["name"] for p in params if p.get("schema", {}).get("type") == "integer"]
            for name in ints:
                for odd in ODD_IDS:
                    path = template
                    for p in params:
                        path = path.replace(
                            "{" + p["name"] + "}", odd if p["name"] == name else "1"
                        )
                    await asyncio.to_thread(probe, method, path)
    assert probes, "no operation with an integer path parameter in the document"
    assert not problems, "\n".join(problems[:40])
