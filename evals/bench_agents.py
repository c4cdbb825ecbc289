"""Local model decision latency: cold plans (no cache) over every task of the eval datasets.

    python -m evals.bench_agents [FILE.jsonl ...]

Prints p50/p95/max milliseconds of ``agents.nlu.plan`` (the work behind the local model's first
decision for a task; later decisions of the same task reuse the plan) and of a full
``LocalChatModel.invoke`` with bound tools.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from agents import nlu
from agents.models import _PLANS, LocalChatModel
from agents.toolkit import FIXTURE_WORLD, tools_for

DEFAULT = [Path("evals/data/agents.jsonl"), Path("evals/data/agents_heldout.jsonl")]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or DEFAULT
    tasks = [json.loads(x)["task"] for f in files for x in f.read_text().splitlines() if x.strip()]
    plan_ms, invoke_ms = [], []
    from langchain_core.messages import HumanMessage

    model = LocalChatModel(world=FIXTURE_WORLD).bind_tools(
        [t.json_schema() for t in tools_for("security")]
    )
    for task in tasks:
        nlu._correct.cache_clear()
        t = time.perf_counter()
        nlu.plan(task, FIXTURE_WORLD)
        plan_ms.append((time.perf_counter() - t) * 1000)
        _PLANS.clear()
        t = time.perf_counter()
        model.invoke([HumanMessage(task)])
        invoke_ms.append((time.perf_counter() - t) * 1000)
    for name, values in (("plan (cold)", plan_ms), ("invoke (cold)", invoke_ms)):
        print(
            f"{name:14s} n={len(values)} p50 {pct(values, 0.5):.2f} ms  "
            f"p95 {pct(values, 0.95):.2f} ms  max {max(values):.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
