"""CompactEdge speed and rendition target rate: images compacted *and certified*, end to end.

    python -m evals.bench_compact [--images DIR] [--limit N] [--quality 85] [--format auto]
        [--targets 50,75,85,95] [--baseline REV] [--baseline-limit N]

For every image: read the file, decode it (``ingest.decode_media``), run the whole compaction
(``pipeline.compact_media``: compact form, delivery rendition, scores) and sign the certificate
(the ledger key of a throwaway data dir). Prints, per image, the wall time with the stage
breakdown the pipeline reports and the 1-minute load average, then p50/p95 of each stage.

``--targets``: the same pipeline at each quality target with ``format_preference=auto`` over the
same images; the delivered rendition file is decoded again here and its MS-SSIM re-measured, and
the fraction meeting the target is printed (goal >= 95%).

``--baseline REV``: the same measurement of an older revision of the code (``git archive REV``
into a temporary directory, run in its own worker process) on the first ``--baseline-limit``
images (default 1: the old pipeline takes minutes per image), interleaved image by image with
the current code so both see the same machine load, and the per-image ratios (wall and CPU
time) are printed; plus one timed ``metrics.ms_ssim`` call of each revision on the same pair
of images, with its value. Also printed: the restoration networks' exact decode cost. Timings
on a shared machine are noisy: read them next to the load average. The last line is a JSON
summary. Never used for assertions in tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

KODAK = Path("/work/shared/data/kodak")
REPO = Path(__file__).resolve().parents[1]


# --- worker side: runs inside a process whose ``compaction`` is the code under test ---------


def _configure(tmp: Path) -> None:
    from models.settings import Settings, configure

    configure(Settings(data_dir=tmp, log_format="text"))


def _warm_up() -> None:
    """One tiny compaction first, so weight loading and lazy imports are not timed."""
    from compaction import ingest, pipeline

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    media = ingest.Media(kind="image", container="png", frames=[rgb])
    pipeline.compact_media(media, b"", quality_target=85, preference="auto", compact_id="warm")


def _remeasured_ms_ssim(rgb: np.ndarray, fmt: str, data: bytes) -> float:
    """MS-SSIM of the delivered rendition file, decoded again from its bytes."""
    from compaction import metrics, renditions

    return metrics.ms_ssim(rgb, renditions.decode(data, fmt))


def run_one(path: Path, quality: float, fmt: str, remeasure: bool) -> dict[str, Any]:
    """Decode, compact, certify one image; wall time per stage and what was delivered."""
    from compaction import certificate, ingest, pipeline

    original = path.read_bytes()
    c0 = time.process_time()
    t0 = time.perf_counter()
    media = ingest.decode_media(original)
    t1 = time.perf_counter()
    result = pipeline.compact_media(
        media, original, quality_target=quality, preference=fmt, compact_id="bench"
    )
    t2 = time.perf_counter()
    certificate.sign(result.body)
    t3 = time.perf_counter()
    stages = {"decode": t1 - t0, **{k: v for k, v in result.timings.items() if k != "total_s"}}
    stages = {k.removesuffix("_s"): v for k, v in stages.items()}
    stages["sign"] = t3 - t2
    rendition = result.body["rendition"]
    out: dict[str, Any] = {
        "image": path.name,
        "quality": quality,
        "total": t3 - t0,
        "cpu": time.process_time() - c0,  # all threads: less sensitive to others' load
        "stages": stages,
        "load1": os.getloadavg()[0],
        "compact_bytes": len(result.bitstream),
        "compact_ms_ssim": result.body["scores"]["ms_ssim"],
        "compact_meets": result.body["meets_target"],
        "base_quality": result.body["codec"].get("base_quality"),
        "rendition_format": rendition["format"],
        "rendition_bytes": rendition["bytes"],
        "rendition_ms_ssim": rendition["ms_ssim"],
        "rendition_meets": rendition["meets_target"],
    }
    if remeasure:
        rgb = media.frames[0]
        again = _remeasured_ms_ssim(rgb, rendition["format"], result.rendition)
        out["rendition_ms_ssim_remeasured"] = again
    return out


def time_ms_ssim(path: Path) -> dict[str, Any]:
    """One ``metrics.ms_ssim`` call of this revision (original vs its JPEG q50), timed."""
    import io

    from PIL import Image

    from compaction import metrics

    rgb = _image(path)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=50)
    with Image.open(buf) as im:
        dec = np.asarray(im.convert("RGB")).copy()
    t0 = time.perf_counter()
    value = metrics.ms_ssim(rgb, dec)
    return {"ms_ssim": value, "seconds": time.perf_counter() - t0, "load1": os.getloadavg()[0]}


def time_restoration(path: Path) -> dict[str, Any]:
    """Each registered restoration network on this image's AVIF base (q55): seconds (best of
    3) on 1 and on 2 strips, the exact float64 decode path."""
    from compaction import restore
    from compaction.base import avif_decode, avif_encode

    rgb = avif_decode(avif_encode(np.asarray(_image(path)), 55))
    out: dict[str, Any] = {"load1": os.getloadavg()[0]}
    for wid, spec in restore.SPECS.items():
        loaded = restore.load_restorer(wid)
        assert loaded is not None
        params = sum(p.numel() for p in loaded[0].parameters())
        for threads in (1, 2):
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                restore.restore(rgb, 55, wid, threads=threads)
                best = min(best, time.perf_counter() - t0)
            out[f"{spec.file} ({params} params), {threads} strip(s)"] = round(best, 3)
    return out


def _image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def worker() -> None:
    """Read ``path<TAB>quality<TAB>format<TAB>remeasure`` lines (or ``ms_ssim<TAB>path``),
    answer one JSON line each."""
    with tempfile.TemporaryDirectory() as tmp:
        _configure(Path(tmp))
        _warm_up()
        print("ready", flush=True)
        for line in sys.stdin:
            fields = line.rstrip("\n").split("\t")
            if fields[0] in ("ms_ssim", "restore"):
                fn = time_ms_ssim if fields[0] == "ms_ssim" else time_restoration
                print(json.dumps(fn(Path(fields[1]))), flush=True)
                continue
            path, quality, fmt, remeasure = fields
            row = run_one(Path(path), float(quality), fmt, remeasure == "1")
            print(json.dumps(row), flush=True)


# --- driver side ---------------------------------------------------------------------------


class Worker:
    """A worker process running this file's ``worker()`` against one copy of the code."""

    def __init__(self, root: Path, label: str) -> None:
        self.label = label
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evals.bench_compact", "--worker"],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._line() == "ready", f"{label} worker did not start"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} worker exited ({self.proc.wait()})")
        return line.strip()

    def run(self, path: Path, quality: float, fmt: str, remeasure: bool = False) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{path}\t{quality}\t{fmt}\t{int(remeasure)}\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def ms_ssim(self, path: Path) -> dict:
        return self._ask(f"ms_ssim\t{path}")

    def restoration(self, path: Path) -> dict:
        return self._ask(f"restore\t{path}")

    def _ask(self, line: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def _export_revision(rev: str, dest: Path) -> Path:
    """The code of ``rev`` in ``dest`` (plus this harness, which it may predate)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    shutil.copy(Path(__file__), dest / "evals" / "bench_compact.py")
    return dest


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values), p)) if values else float("nan")


def _print_row(label: str, row: dict) -> None:
    stages = " ".join(f"{k}={v:.2f}" for k, v in row["stages"].items())
    print(
        f"  {label:8s} {row['image']} q{row['quality']:g} total={row['total']:.2f}s "
        f"cpu={row['cpu']:.2f}s [{stages}] "
        f"compact={row['compact_bytes']}B ms-ssim={row['compact_ms_ssim']} "
        f"rendition={row['rendition_format']}/{row['rendition_bytes']}B "
        f"meets={row['rendition_meets']} load1={row['load1']:.2f}",
        flush=True,
    )


def _summary(label: str, rows: list[dict]) -> dict[str, Any]:
    """p50/p95 of the total and of every stage; printed and returned."""
    totals = [r["total"] for r in rows]
    stages = sorted({k for r in rows for k in r["stages"]})
    per_stage = {
        k: {
            "p50": round(_pct([r["stages"].get(k, 0.0) for r in rows], 50), 3),
            "p95": round(_pct([r["stages"].get(k, 0.0) for r in rows], 95), 3),
        }
        for k in stages
    }
    loads = [r["load1"] for r in rows]
    cpus = [r["cpu"] for r in rows]
    out = {
        "images": len(rows),
        "p50_s": round(_pct(totals, 50), 3),
        "p95_s": round(_pct(totals, 95), 3),
        "max_s": round(max(totals), 3),
        "cpu_p50_s": round(_pct(cpus, 50), 3),
        "cpu_p95_s": round(_pct(cpus, 95), 3),
        "stages": per_stage,
        "load1_min_max": [round(min(loads), 2), round(max(loads), 2)],
    }
    print(
        f"{label}: {len(rows)} images, total p50 {out['p50_s']:.2f}s p95 {out['p95_s']:.2f}s "
        f"max {out['max_s']:.2f}s; CPU time p50 {out['cpu_p50_s']:.2f}s "
        f"p95 {out['cpu_p95_s']:.2f}s "
        f"(load1 {out['load1_min_max'][0]}-{out['load1_min_max'][1]})"
    )
    for k, v in per_stage.items():
        print(f"    {k:16s} p50 {v['p50']:.3f}s  p95 {v['p95']:.3f}s")
    return out


def _target_rates(current: Worker, files: list[Path], targets: list[float]) -> dict[str, Any]:
    """For each target: the fraction of ``auto`` renditions whose re-measured MS-SSIM meets it."""
    from compaction.quality import target_ms_ssim

    rates: dict[str, Any] = {}
    for q in targets:
        need = target_ms_ssim(q)
        rows = [current.run(f, q, "auto", remeasure=True) for f in files]
        ok = [r["rendition_ms_ssim_remeasured"] >= need for r in rows]
        formats: dict[str, int] = {}
        for r in rows:
            formats[r["rendition_format"]] = formats.get(r["rendition_format"], 0) + 1
        rates[f"{q:g}"] = {
            "met": sum(ok),
            "of": len(rows),
            "rate": round(sum(ok) / len(rows), 4),
            "compact_met": sum(bool(r["compact_meets"]) for r in rows),
            "formats": formats,
            "p95_s": round(_pct([r["total"] for r in rows], 95), 3),
        }
        print(
            f"target {q:g} (MS-SSIM >= {need:.4f}): auto rendition meets on {sum(ok)}/{len(rows)}"
            f" = {100 * sum(ok) / len(rows):.1f}%; compact form meets on "
            f"{rates[f'{q:g}']['compact_met']}/{len(rows)}; formats {formats}; "
            f"p95 {rates[f'{q:g}']['p95_s']:.2f}s; load1 {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, default=KODAK)
    parser.add_argument("--limit", type=int, default=0, help="only the first N images")
    parser.add_argument("--quality", type=float, default=85)
    parser.add_argument("--format", default="auto")
    parser.add_argument("--targets", default="50,75,85,95", help="'' to skip the rate sweep")
    parser.add_argument("--baseline", default="", help="git revision to compare against")
    parser.add_argument(
        "--baseline-limit",
        type=int,
        default=1,
        help="the baseline pipeline on the first N images (0: only its one MS-SSIM call)",
    )
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".png", ".ppm"})
    files = files[: args.limit] if args.limit else files
    print(
        f"{len(files)} images from {args.images}; {os.cpu_count()} CPUs; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    summary: dict[str, Any] = {"quality_target": args.quality, "format": args.format}
    with tempfile.TemporaryDirectory() as tmp:
        current = Worker(REPO, "current")
        base = None
        if args.baseline:
            base = Worker(_export_revision(args.baseline, Path(tmp)), args.baseline)
        rows: list[dict] = []
        base_rows: list[dict] = []
        paired: list[int] = []
        for i, f in enumerate(files):
            if base is not None and i < args.baseline_limit:
                base_rows.append(base.run(f, args.quality, args.format))
                _print_row("baseline", base_rows[-1])
                paired.append(len(rows))
            rows.append(current.run(f, args.quality, args.format))
            _print_row("current", rows[-1])
        summary["current"] = _summary("current", rows)
        if base is not None:
            old, new = base.ms_ssim(files[0]), current.ms_ssim(files[0])
            summary["ms_ssim_call_s"] = {"baseline": old["seconds"], "current": new["seconds"]}
            print(
                f"one MS-SSIM call ({files[0].name} vs its JPEG q50): baseline "
                f"{old['seconds']:.3f}s = {old['ms_ssim']!r}, current {new['seconds']:.3f}s = "
                f"{new['ms_ssim']!r} (load1 {new['load1']:.2f})"
            )
            base.close()
            summary["baseline"] = {"revision": args.baseline}
            if base_rows:
                summary["baseline"].update(_summary(args.baseline, base_rows))
            for key in ("total", "cpu") if base_rows else ():
                ratio = [b[key] / rows[j][key] for b, j in zip(base_rows, paired, strict=True)]
                summary["baseline"][f"median_speedup_{key}"] = round(float(np.median(ratio)), 2)
                print(
                    f"same-run speed-up in {key} time (baseline / current, per image): median "
                    f"{np.median(ratio):.1f}x, range {min(ratio):.1f}-{max(ratio):.1f}x"
                )
        summary["restoration_s"] = current.restoration(files[0])
        print(f"restoration networks on {files[0].name}'s AVIF base: {summary['restoration_s']}")
        targets = [float(t) for t in args.targets.split(",") if t.strip()]
        if targets:
            summary["target_rates"] = _target_rates(current, files, targets)
        current.close()
    summary["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
