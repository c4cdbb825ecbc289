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


def test_offline_playbook_list_matches_the_shipped_library() -> None:
    """The fallback list the models use when the playbook service cannot be listed."""
    from pathlib import Path

    import yaml

    from agents.nlu import World, declared_params
    from agents.toolkit import DEFAULT_PLAYBOOKS

    library = Path(__file__).parents[2] / "tools" / "playbook_library"
    shipped = {}
    for path in sorted(library.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        shipped[doc["name"]] = {p["name"] for p in doc.get("params") or []}
    world = World(playbooks=DEFAULT_PLAYBOOKS)
    assert {p["name"]: set(declared_params(world, p["name"])) for p in DEFAULT_PLAYBOOKS} == shipped
