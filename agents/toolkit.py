"""The agents' tools: one registration per tool, and the backends that run them.

A tool is registered once with ``register_tool``: its name, description, argument schema, the
agents allowed to use it, whether it changes state, and how to tell a read-only call of a
state-changing tool (``execute_command`` with an allow-listed command, ``run_playbook`` with
``dry_run``). The graph, the approval gate and the models all read this registry.

Backends run the calls:

- ``ServiceBackend`` calls the ``tools/`` service functions the API uses (each module imported
  where it is used, so a missing one is a clear ``ToolUnavailable``, not a failure at start);
- ``RecordingBackend`` is the evals' fixture world: it records calls and answers plausibly
  without touching any host.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents import policy
from models.errors import BadRequest, ServiceUnavailable

AGENTS = ("security", "remediation", "analysis")


class ToolUnavailable(ServiceUnavailable):
    """A tool's service module (or function) is not installed in this build."""

    default_code = "TOOL_UNAVAILABLE"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    args_model: type[BaseModel]
    agents: frozenset[str]
    changes_state: bool
    module: str
    function: str
    takes_actor: bool = False
    read_only_when: Callable[[dict[str, Any]], bool] | None = None

    def is_state_changing(self, args: dict[str, Any]) -> bool:
        """Whether this particular call changes state (and so passes the approval gate)."""
        if not self.changes_state:
            return False
        return not (self.read_only_when is not None and self.read_only_when(args))

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """Arguments checked against the schema (BadRequest naming the fields if not)."""
        try:
            model = self.args_model.model_validate(args)
        except ValidationError as exc:
            fields = [".".join(str(p) for p in err["loc"]) for err in exc.errors()]
            raise BadRequest(f"invalid arguments for {self.name}", fields=fields) from exc
        return model.model_dump(exclude_unset=True)

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.args_model.model_json_schema(),
            },
        }


TOOLS: dict[str, ToolSpec] = {}


def register_tool(
    name: str,
    description: str,
    args_model: type[BaseModel],
    *,
    agents: tuple[str, ...],
    changes_state: bool,
    service: str,
    takes_actor: bool = False,
    read_only_when: Callable[[dict[str, Any]], bool] | None = None,
) -> ToolSpec:
    """Register one tool; ``service`` is ``"tools.module:function"``."""
    module, function = service.split(":")
    unknown = set(agents) - set(AGENTS)
    if unknown:
        raise ValueError(f"unknown agents {sorted(unknown)}")
    spec = ToolSpec(
        name=name,
        description=description,
        args_model=args_model,
        agents=frozenset(agents),
        changes_state=changes_state,
        module=module,
        function=function,
        takes_actor=takes_actor,
        read_only_when=read_only_when,
    )
    TOOLS[name] = spec
    return spec


def tools_for(agent: str) -> list[ToolSpec]:
    """The agent's allow-list, in registration order."""
    return [spec for spec in TOOLS.values() if agent in spec.agents]


def result_hash(result: Any) -> str:
    body = json.dumps(result, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


# --- argument schemas ----------------------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class ServerArgs(_Args):
    server_id: int = Field(ge=1, description="Server id from the registry")


class ExecuteArgs(_Args):
    server_id: int = Field(ge=1)
    command: str = Field(min_length=1, max_length=4000)
    timeout: int = Field(default=30, ge=1, le=3600)


class RunPlaybookArgs(_Args):
    playbook: str | int = Field(description="Playbook name or id")
    server_id: int | None = Field(default=None, ge=1)
    dry_run: bool = False
    params: dict[str, Any] | None = None


class AuditArgs(_Args):
    action: str | None = None
    server_id: int | None = Field(default=None, ge=1)
    from_: str | None = Field(default=None, description="ISO 8601 start")
    to: str | None = Field(default=None, description="ISO 8601 end")
    limit: int = Field(default=50, ge=1, le=500)


class SiteArgs(_Args):
    site_id: int = Field(ge=1)


class IncidentArgs(_Args):
    status: Literal["open", "resolved", "all"] = "all"
    severity: Literal["critical", "high", "medium", "low"] | None = None
    limit: int = Field(default=50, ge=1, le=500)


class ShieldArgs(_Args):
    site_id: int = Field(ge=1)
    enabled: bool


class ThreatFeedArgs(_Args):
    type: str | None = None
    limit: int = Field(default=50, ge=1, le=500)


class QuarantineArgs(_Args):
    target: str = Field(min_length=1, max_length=255, description="IP, CIDR or hostname")
    reason: str | None = Field(default=None, max_length=500)
    duration_hours: float | None = Field(default=None, gt=0, description="None: permanent")


class ReleaseArgs(_Args):
    target: str | None = Field(default=None, max_length=255)
    quarantine_id: int | None = Field(default=None, ge=1)


class RuleArgs(_Args):
    type: Literal["ip_block", "user_agent_block", "rate_limit", "geo_block"]
    value: str = Field(min_length=1, max_length=500)
    action: Literal["block", "challenge", "log"] = "block"
    priority: int = Field(default=100, ge=1, le=10000)


def _command_read_only(args: dict[str, Any]) -> bool:
    return policy.is_read_only_command(str(args.get("command", "")))


def _dry_run(args: dict[str, Any]) -> bool:
    return bool(args.get("dry_run"))


register_tool(
    "list_servers",
    "List managed servers with id, name, host, tags and status.",
    NoArgs,
    agents=("remediation", "analysis"),
    changes_state=False,
    service="tools.servers:list_servers",
)
register_tool(
    "get_server_status",
    "Current status of one server (reachability, load, disk).",
    ServerArgs,
    agents=("remediation", "analysis"),
    changes_state=False,
    service="tools.servers:get_server_status",
)
register_tool(
    "execute_command",
    "Run a shell command on a server. Read-only inspection commands run at once; anything "
    "else needs approval.",
    ExecuteArgs,
    agents=("remediation",),
    changes_state=True,
    service="tools.executor:execute_command",
    takes_actor=True,
    read_only_when=_command_read_only,
)
register_tool(
    "list_playbooks",
    "List the available remediation playbooks and their parameters.",
    NoArgs,
    agents=("remediation",),
    changes_state=False,
    service="tools.playbooks:list_playbooks",
)
register_tool(
    "run_playbook",
    "Run a playbook (by name) on a server; dry_run=true only shows what it would do.",
    RunPlaybookArgs,
    agents=("remediation",),
    changes_state=True,
    service="tools.playbooks:run_playbook",
    takes_actor=True,
    read_only_when=_dry_run,
)
register_tool(
    "query_audit_log",
    "Search the audit ledger by action, server and time range.",
    AuditArgs,
    agents=("analysis",),
    changes_state=False,
    service="tools.audit:query_audit_log",
)
register_tool(
    "get_site_health",
    "Health score, threat level and 24-hour prediction of a monitored site.",
    SiteArgs,
    agents=("analysis", "security"),
    changes_state=False,
    service="tools.sentry:get_site_health",
)
register_tool(
    "list_incidents",
    "List Sentry V incidents by status and severity.",
    IncidentArgs,
    agents=("analysis", "security"),
    changes_state=False,
    service="tools.sentry:list_incidents",
)
register_tool(
    "set_shield_mode",
    "Turn a site's shield mode on or off.",
    ShieldArgs,
    agents=("security",),
    changes_state=True,
    service="tools.sentry:set_shield_mode",
    takes_actor=True,
)
register_tool(
    "get_threat_feed",
    "Current threat-intelligence indicators.",
    ThreatFeedArgs,
    agents=("security", "analysis"),
    changes_state=False,
    service="tools.eshield:get_threat_feed",
)
register_tool(
    "get_vaultshield_status",
    "VaultShield protection status, active rule count and traffic statistics.",
    NoArgs,
    agents=("security", "analysis"),
    changes_state=False,
    service="tools.vaultshield:get_vaultshield_status",
)
register_tool(
    "quarantine_target",
    "Quarantine an IP, CIDR or hostname (eShield), optionally for duration_hours.",
    QuarantineArgs,
    agents=("security",),
    changes_state=True,
    service="tools.eshield:quarantine_target",
    takes_actor=True,
)
register_tool(
    "release_quarantine",
    "Release a quarantined target (by target or quarantine id).",
    ReleaseArgs,
    agents=("security",),
    changes_state=True,
    service="tools.eshield:release_quarantine",
    takes_actor=True,
)
register_tool(
    "add_vaultshield_rule",
    "Add a VaultShield rule: ip_block, user_agent_block, rate_limit or geo_block.",
    RuleArgs,
    agents=("security",),
    changes_state=True,
    service="tools.vaultshield:add_vaultshield_rule",
    takes_actor=True,
)


# --- the world the models resolve names against --------------------------------------------


@dataclass
class World:
    """Names the models resolve to ids: servers, sites and playbooks."""

    servers: list[dict[str, Any]] = field(default_factory=list)  # {id, name, host, tags}
    sites: list[dict[str, Any]] = field(default_factory=list)  # {id, name, url}
    playbooks: list[dict[str, Any]] = field(default_factory=list)  # {name, params}


# The shipped library (tools/playbook_library), for when the playbook service cannot be listed.
DEFAULT_PLAYBOOKS: list[dict[str, Any]] = [
    {"name": "restart-service", "params": ["service"]},
    {
        "name": "clear-disk-space",
        "params": ["journal_max_size", {"name": "tmp_age_days", "type": "integer"}],
    },
    {"name": "rotate-logs", "params": ["config"]},
    {"name": "patch-package", "params": ["package"]},
    {"name": "collect-diagnostics", "params": [{"name": "journal_lines", "type": "integer"}]},
]

FIXTURE_WORLD = World(
    servers=[
        {"id": 1, "name": "prod-web-01", "host": "10.0.1.11", "tags": ["prod", "web"]},
        {"id": 2, "name": "prod-web-02", "host": "10.0.1.12", "tags": ["prod", "web"]},
        {"id": 3, "name": "prod-db-01", "host": "10.0.2.21", "tags": ["prod", "db"]},
        {"id": 4, "name": "staging-app-01", "host": "10.0.3.31", "tags": ["staging", "app"]},
    ],
    sites=[
        {"id": 1, "name": "shop.example.com", "url": "https://shop.example.com"},
        {"id": 2, "name": "api.example.com", "url": "https://api.example.com"},
        {"id": 3, "name": "blog.example.com", "url": "https://blog.example.com"},
    ],
    playbooks=DEFAULT_PLAYBOOKS,
)


# --- backends --------------------------------------------------------------------------------


class ToolBackend(Protocol):
    async def call(
        self, spec: ToolSpec, args: dict[str, Any], *, actor: str, request_id: str | None
    ) -> dict[str, Any]: ...

    async def world(self) -> World: ...


def _service_function(spec: ToolSpec) -> Callable[..., Any]:
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise ToolUnavailable(f"tool {spec.name} is unavailable: {spec.module} missing") from exc
    fn = getattr(module, spec.function, None)
    if fn is None:
        raise ToolUnavailable(f"tool {spec.name} is unavailable: {spec.module}.{spec.function}")
    return fn  # type: ignore[no-any-return]


class ServiceBackend:
    """Runs calls through the same ``tools/`` service functions the API uses."""

    async def call(
        self, spec: ToolSpec, args: dict[str, Any], *, actor: str, request_id: str | None
    ) -> dict[str, Any]:
        from models.db import session_scope

        fn = _service_function(spec)
        kwargs = dict(args)
        if spec.takes_actor:
            kwargs.update(actor=actor, request_id=request_id)
        async with session_scope() as session:
            result = await fn(session, **kwargs)
        if spec.module == "tools.vaultshield" and spec.function == "add_vaultshield_rule":
            publish = getattr(importlib.import_module(spec.module), "publish_rules_changed", None)
            if publish is not None:
                maybe = publish()
                if hasattr(maybe, "__await__"):
                    await maybe
        return result if isinstance(result, dict) else {"result": result}

    async def world(self) -> World:
        from models import servers, sites
        from models.db import session_scope

        async with session_scope() as session:
            server_rows = await servers.list_servers(session)
            site_rows = await sites.list_sites(session)
            playbooks: list[dict[str, Any]] = DEFAULT_PLAYBOOKS
            try:
                listed = await _service_function(TOOLS["list_playbooks"])(session)
                items = listed.get("playbooks", []) if isinstance(listed, dict) else listed
                if items:
                    playbooks = [
                        {"name": p.get("name"), "params": list(p.get("params") or [])}
                        for p in items
                        if isinstance(p, dict) and p.get("name")
                    ]
            except Exception:  # the playbook module is optional: fall back to the defaults
                playbooks = DEFAULT_PLAYBOOKS
        return World(
            servers=[
                {"id": s.id, "name": s.name, "host": s.host, "tags": list(s.tags or [])}
                for s in server_rows
            ],
            sites=[{"id": s.id, "name": s.name, "url": s.url} for s in site_rows],
            playbooks=playbooks,
        )


@dataclass
class RecordedCall:
    tool: str
    args: dict[str, Any]
    actor: str


class RecordingBackend:
    """The evals' fixture world: records calls and answers plausibly, touching nothing."""

    def __init__(
        self, world: World | None = None, outputs: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self._world = world or FIXTURE_WORLD
        self._outputs = outputs or {}  # tool -> the answer to give (evals inject tool output)
        self.calls: list[RecordedCall] = []

    async def world(self) -> World:
        return self._world

    async def call(
        self, spec: ToolSpec, args: dict[str, Any], *, actor: str, request_id: str | None
    ) -> dict[str, Any]:
        self.calls.append(RecordedCall(spec.name, dict(args), actor))
        if spec.name in self._outputs:
            return dict(self._outputs[spec.name])
        return self.answer(spec.name, args)

    def answer(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        world = self._world
        if tool == "list_servers":
            return {"servers": [dict(s, status="online") for s in world.servers]}
        if tool == "get_server_status":
            return {"server_id": args.get("server_id"), "status": "online", "load": 0.42}
        if tool == "execute_command":
            return {
                "exit_code": 0,
                "stdout": f"(recorded) {args.get('command')}\n",
                "stderr": "",
                "truncated": False,
                "duration_ms": 12,
            }
        if tool == "list_playbooks":
            return {"playbooks": world.playbooks}
        if tool == "run_playbook":
            return {"status": "dry_run" if args.get("dry_run") else "succeeded", **args}
        if tool == "query_audit_log":
            return {"entries": [], "total": 0}
        if tool == "get_site_health":
            return {"site_id": args.get("site_id"), "health_score": 97, "threat_level": "low"}
        if tool == "list_incidents":
            return {"incidents": [], "total": 0}
        if tool == "get_threat_feed":
            return {"indicators": [], "total": 0}
        if tool == "get_vaultshield_status":
            return {"enabled": True, "active_rules": 12}
        return {"ok": True, **args}
