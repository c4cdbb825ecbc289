"""Export files verify offline, and every kind of tampering with them is located."""

from __future__ import annotations

import asyncio

import orjson

from models import ledger as audit_ledger
from models.ledger import merkle
from models.ledger.canonical import canonical_json
from models.ledger.checkpoints import make_checkpoint, signer
from models.ledger.verify import verify_export
from tests.support.processes import run_cli

SIZE = 12


async def _exported(ledger, tmp_path) -> tuple[bytes, list[bytes]]:
    for i in range(SIZE // 2):
        await audit_ledger.record("quarantine", actor="agent:security", target=f"10.0.0.{i}")
    await make_checkpoint()
    for i in range(SIZE // 2):
        await audit_ledger.record("quarantine_released", actor="key:1", target=f"10.0.0.{i}")
    path = tmp_path / "audit.jsonl"
    proc = await asyncio.to_thread(run_cli, "audit", "export", str(path), env=ledger.env)
    assert proc.returncode == 0, proc.stderr
    header, *lines = path.read_bytes().splitlines()
    assert len(lines) == SIZE
    return header, lines


def _write(tmp_path, header: bytes, lines: list[bytes], name: str = "t.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join([header, *lines]) + b"\n")
    return path


def _first_bad(tmp_path, header, lines, **kwargs) -> int | None:
    report = verify_export(_write(tmp_path, header, lines), **kwargs)
    return None if report.ok else report.problem.seq


async def test_export_tampering_is_located(ledger, tmp_path) -> None:
    header, lines = await _exported(ledger, tmp_path)
    assert _first_bad(tmp_path, header, lines) is None
    path = _write(tmp_path, header, lines, "good.jsonl")
    proc = await asyncio.to_thread(run_cli, "audit", "verify", "--export", str(path), env={})
    assert proc.returncode == 0 and f"OK: {SIZE} entries" in proc.stdout, proc.stderr

    flipped = list(lines)
    flipped[4] = flipped[4].replace(b"10.0.0.4", b"10.0.0.5")
    assert _first_bad(tmp_path, header, flipped) == 4  # caught by entry 5's prev_hash
    last = list(lines)
    last[-1] = last[-1].replace(b"key:1", b"key:2")
    assert _first_bad(tmp_path, header, last) == SIZE // 2  # only the checkpoint covers it

    assert _first_bad(tmp_path, header, lines[:3] + lines[4:]) == 3  # deleted
    swapped = list(lines)
    swapped[2], swapped[7] = swapped[7], swapped[2]
    assert _first_bad(tmp_path, header, swapped) == 2

    # an inserted entry that is locally perfect (right seq and chain, canonical) and every later
    # entry rewritten to match: only the signed checkpoints can tell
    at = SIZE // 2  # just after the first checkpoint
    forged, prev = [], lines[at - 1]
    for i, line in enumerate([lines[0], *lines[at:]], start=at):
        entry = orjson.loads(line)
        entry.update(seq=i, prev_hash=merkle.leaf_hash(prev).hex())
        prev = canonical_json(entry)
        forged.append(prev)
    rewritten = lines[:at] + forged
    fixed_header = orjson.loads(header)
    fixed_header["tree_size"] = len(rewritten)
    assert _first_bad(tmp_path, orjson.dumps(fixed_header), rewritten) == at

    rolled = orjson.loads(header)
    rolled["tree_size"] = 8
    assert _first_bad(tmp_path, orjson.dumps(rolled), lines[:8]) == 8  # rolled back

    # the file's own checkpoints removed: a checkpoint saved earlier still catches the rollback
    bare = orjson.loads(header)
    bare.update(tree_size=8, checkpoints=[])
    saved = orjson.loads(header)["checkpoints"][-1]
    assert _first_bad(tmp_path, orjson.dumps(bare), lines[:8]) is None
    assert _first_bad(tmp_path, orjson.dumps(bare), lines[:8], trusted=[saved]) == 8
    saved_file = tmp_path / "saved.checkpoint"
    saved_file.write_text(saved)
    proc = await asyncio.to_thread(
        run_cli,
        "audit",
        "verify",
        "--export",
        str(_write(tmp_path, orjson.dumps(bare), lines[:8], "bare.jsonl")),
        "--checkpoint",
        str(saved_file),
        env={},
    )
    assert proc.returncode == 1 and "FAILED at seq 8:" in proc.stderr, proc.stderr

    # pinning the real key refuses a file re-signed with another key
    impostor = orjson.loads(header)
    impostor["verifier_key"] = "other+00000000+" + "A" * 44
    report_ok = verify_export(
        _write(tmp_path, orjson.dumps(impostor), lines, "imp.jsonl"),
        verifier_key=signer().verifier_key,
    )
    assert report_ok.ok  # the pinned key, not the header's, decides
