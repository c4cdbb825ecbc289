"""Every registered agent tool resolves to a real tools/ service function that accepts the
arguments the agent's schema allows (so a catalog drift fails here, not in production)."""

from __future__ import annotations

import inspect

import pytest

from agents.toolkit import TOOLS, _service_function


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_tool_resolves_and_accepts_its_arguments(name: str) -> None:
    spec = TOOLS[name]
    fn = _service_function(spec)
    assert inspect.iscoroutinefunction(fn), f"{spec.module}.{spec.function} is not async"
    params = inspect.signature(fn).parameters
    accepted = set(params)
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    wanted = set(spec.args_model.model_fields)
    if spec.takes_actor:
        wanted |= {"actor", "request_id"}
    missing = wanted - accepted
    assert takes_kwargs or not missing, f"{name}: {spec.function} lacks {sorted(missing)}"
    required = {
        n
        for n, p in list(params.items())[1:]
        if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    assert required <= wanted, f"{name}: {spec.function} requires {sorted(required - wanted)}"
