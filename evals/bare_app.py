"""The baseline for evals/bench_api.py: a bare FastAPI route returning the same body."""

from fastapi import FastAPI

app = FastAPI()
BODY = {"success": True, "servers": []}


@app.get("/api/servers")
async def servers() -> dict[str, object]:
    return BODY
