"""Playbooks: YAML files of ordered, parameterised steps with rollbacks, run as queued jobs.

A playbook file names its parameters (type, required, default, allowed pattern) and its steps
(command template, timeout, continue_on_error, rollback). Templates render in a Jinja2 sandbox,
and every parameter value is shell-quoted before it reaches a template, so a parameter can never
inject a command. Files come from the shipped library (``tools/playbook_library``) and the
optional ``playbooks_dir`` setting; they are registered in the ``playbooks`` table.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import time
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import ledger
from models import playbooks as repo
from models import servers as server_repo
from models.db import get_database, utcnow
from models.errors import BadRequest, ExecFlowError, NotFound, PolicyDenied
from models.jobs import JobContext, enqueue, job_handler
from models.settings import get_settings
from tools.command_policy import check_command_policy
from tools.executor import ServerRef, run_on_server, server_ref
from tools.ssh import Target

log = logging.getLogger("execflow.playbooks")
LIBRARY = Path(__file__).parent / "playbook_library"
_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_KEPT_OUTPUT = 8192  # bytes of each stream stored per step in the run record


MAX_PLAYBOOK_BYTES = 256 * 1024
MAX_YAML_DEPTH = 20


class _PlaybookLoader(yaml.SafeLoader):
    """Safe YAML without the parts hostile files abuse: no aliases (billion laughs), no
    duplicate keys (a reviewer reads the first ``command``, the last one runs), bounded depth."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases are not accepted", mark)
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "nested too deeply", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys = [self.construct_object(k, deep=True) for k, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {sorted(map(str, duplicates))}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


class ParamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$")
    type: Literal["string", "integer", "boolean"] = "string"
    required: bool = False
    default: bool | int | str | None = None
    pattern: str | None = None
    description: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    command: str = Field(min_length=1, max_length=10_000)
    timeout: float = Field(default=60, gt=0, le=300)
    continue_on_error: bool = False
    rollback: str | None = Field(default=None, max_length=10_000)


class PlaybookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")
    description: str = ""
    server_specific: bool = True
    params: list[ParamSpec] = Field(default_factory=list)
    steps: list[StepSpec] = Field(min_length=1, max_length=100)


def load_spec(text: str, *, source: str = "<playbook>") -> PlaybookSpec:
    """Parse and validate a playbook file; templates are plain ``{{ param }}`` placeholders of
    declared parameters, nothing else (no filters, attributes, calls, blocks)."""
    if len(text.encode()) > MAX_PLAYBOOK_BYTES:
        raise ValueError(f"{source}: larger than {MAX_PLAYBOOK_BYTES} bytes")
    try:
        spec = PlaybookSpec.model_validate(yaml.load(text, Loader=_PlaybookLoader))  # noqa: S506
    except (yaml.YAMLError, ValidationError, RecursionError) as exc:
        raise ValueError(f"{source}: {str(exc)[:2000]}") from exc
    declared = {p.name for p in spec.params}
    for step in spec.steps:
        for template in filter(None, (step.command, step.rollback)):
            try:
                used = _placeholders(template)
            except (jinja2.TemplateSyntaxError, ValueError) as exc:
                raise ValueError(f"{source}: step {step.name!r}: {exc}") from exc
            if used - declared:
                raise ValueError(
                    f"{source}: step {step.name!r} uses undeclared {sorted(used - declared)}"
                )
    return spec


def _placeholders(template: str) -> set[str]:
    """The parameter names a template uses; ValueError for anything but text and ``{{ name }}``.

    A parameter arrives shell-quoted; an expression could undo that (``{{ p[1:-1] }}``,
    ``{{ p | replace("'", "") }}``), reach Python internals, or build a gigabyte string.
    """
    names: set[str] = set()
    for node in _ENV.parse(template).body:
        if not isinstance(node, nodes.Output):
            raise ValueError(
                f"only {{{{ parameter }}}} placeholders are allowed, not {_kind(node)}"
            )
        for child in node.nodes:
            if isinstance(child, nodes.Name) and child.ctx == "load":
                names.add(child.name)
            elif not isinstance(child, nodes.TemplateData):
                raise ValueError(
                    f"only {{{{ parameter }}}} placeholders are allowed, not {_kind(child)}"
                )
    return names


def _kind(node: nodes.Node) -> str:
    return f"a {type(node).__name__} expression"


def validate_params(spec: PlaybookSpec, given: dict[str, Any]) -> dict[str, Any]:
    """Typed values for every parameter; 400 naming ``params.<name>`` for anything wrong."""
    known = {p.name: p for p in spec.params}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise BadRequest(
            f"unknown parameter(s): {', '.join(unknown)}", fields=[f"params.{n}" for n in unknown]
        )
    values: dict[str, Any] = {}
    for name, p in known.items():
        value = given.get(name, p.default)
        if value is None:
            if p.required:
                raise BadRequest(f"parameter {name} is required", fields=[f"params.{name}"])
            continue
        value = _coerce(p, value)
        if p.pattern is not None and not re.fullmatch(p.pattern, _text(value)):
            raise BadRequest(
                f"parameter {name} does not match {p.pattern}", fields=[f"params.{name}"]
            )
        values[name] = value
    return values


def _coerce(p: ParamSpec, value: Any) -> Any:
    field = [f"params.{p.name}"]
    if p.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise BadRequest(f"parameter {p.name} must be an integer", fields=field)
        if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,18}", value):
            raise BadRequest(f"parameter {p.name} must be an integer", fields=field)
        return int(value)
    if p.type == "boolean":
        if not isinstance(value, bool):
            raise BadRequest(f"parameter {p.name} must be true or false", fields=field)
        return value
    if not isinstance(value, str):
        raise BadRequest(f"parameter {p.name} must be a string", fields=field)
    return value


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def render(spec: PlaybookSpec, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step's command and rollback with each parameter shell-quoted on the way in."""
    quoted = {name: shlex.quote(_text(v)) for name, v in values.items()}
    plan = []
    for index, step in enumerate(spec.steps):
        plan.append(
            {
                "index": index,
                "name": step.name,
                "command": _render_one(step.command, quoted),
                "rollback": _render_one(step.rollback, quoted) if step.rollback else None,
                "timeout": step.timeout,
                "continue_on_error": step.continue_on_error,
            }
        )
    return plan


def _render_one(template: str, quoted: dict[str, str]) -> str:
    try:
        return _ENV.from_string(template).render(quoted)
    except jinja2.TemplateError as exc:  # includes the sandbox's SecurityError
        raise BadRequest(f"playbook template failed: {exc}", code="TEMPLATE_ERROR") from exc


_synced: set[tuple[str, ...]] = set()
_SYNC_ATTEMPTS = 3


def _read_playbook(path: Path) -> str:
    """The file's text; ValueError if it is too big to be a playbook or is not UTF-8."""
    with path.open("rb") as f:
        data = f.read(MAX_PLAYBOOK_BYTES + 1)
    if len(data) > MAX_PLAYBOOK_BYTES:
        raise ValueError(f"{path}: larger than {MAX_PLAYBOOK_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text") from exc


def _directories() -> list[Path]:
    extra = get_settings().playbooks_dir
    return [LIBRARY] + ([extra] if extra else [])


async def sync_playbooks(*, force: bool = False) -> list[str]:
    """Register (or update) every valid playbook file; returns problems with invalid ones."""
    dirs = _directories()
    key = (get_database().url, *map(str, dirs))
    if key in _synced and not force:
        return []
    for attempt in range(_SYNC_ATTEMPTS):
        try:
            problems = await _register_files(dirs)
            break
        except IntegrityError:
            # Another process (a replica starting beside this one) registered a file first and
            # this transaction rolled back; the next pass finds that row and updates or skips it.
            if attempt == _SYNC_ATTEMPTS - 1:
                raise
    _synced.add(key)
    return problems


async def _register_files(dirs: list[Path]) -> list[str]:
    problems: list[str] = []
    async with get_database().session() as session:
        for directory in dirs:
            for path in sorted(directory.glob("*.y*ml")) if directory.is_dir() else []:
                try:
                    text = _read_playbook(path)
                    spec = load_spec(text, source=str(path))
                except ValueError as exc:
                    problems.append(str(exc))
                    log.warning("skipping invalid playbook %s", exc)
                    continue
                await _upsert(session, spec, str(path), hashlib.sha256(text.encode()).hexdigest())
    return problems


async def _upsert(session: AsyncSession, spec: PlaybookSpec, source: str, checksum: str) -> None:
    row = await repo.get_playbook(session, spec.name)
    if row is not None and row.checksum == checksum:
        return
    if row is None:
        row = repo.Playbook(name=spec.name, checksum=checksum)
        session.add(row)
    row.description, row.server_specific = spec.description, spec.server_specific
    row.definition = spec.model_dump(exclude={"name", "description", "server_specific"})
    row.source, row.checksum = source, checksum
    await session.flush()


def _spec(row: repo.Playbook) -> PlaybookSpec:
    return PlaybookSpec.model_validate(
        {
            "name": row.name,
            "description": row.description,
            "server_specific": row.server_specific,
            **row.definition,
        }
    )


def _run_view(run: repo.PlaybookRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "run_id": run.id,
        "time": run.created_at.isoformat(),
        "server_id": run.server_id,
        "status": run.status,
        "duration_ms": run.duration_ms,
    }


def playbook_view(row: repo.Playbook, last: repo.PlaybookRun | None) -> dict[str, Any]:
    spec = _spec(row)
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "server_specific": row.server_specific,
        "step_count": len(spec.steps),
        "params": [p.model_dump() for p in spec.params],
        "steps": [s.model_dump() for s in spec.steps],
        "last_execution": _run_view(last),
    }


async def list_playbooks(session: AsyncSession) -> dict[str, Any]:
    """Every registered playbook with its step count and last execution."""
    await sync_playbooks()
    last = await repo.last_runs(session)
    rows = await repo.list_playbooks(session)
    return {"playbooks": [playbook_view(row, last.get(row.id)) for row in rows]}


async def _resolve(session: AsyncSession, playbook: int | str) -> repo.Playbook:
    await sync_playbooks()
    row = await repo.get_playbook(session, playbook)
    if row is None:
        raise NotFound(f"Playbook {playbook} not found")
    return row


async def get_playbook(session: AsyncSession, *, playbook: int | str) -> dict[str, Any]:
    """One playbook (by id or name) with its parameters, steps and last execution."""
    row = await _resolve(session, playbook)
    return playbook_view(row, (await repo.last_runs(session)).get(row.id))


async def get_run(session: AsyncSession, *, run_id: int) -> dict[str, Any]:
    """A run's status and per-step results."""
    run = await session.get(repo.PlaybookRun, run_id)
    if run is None:
        raise NotFound(f"Playbook run {run_id} not found")
    return _full_run_view(run)


def _full_run_view(run: repo.PlaybookRun) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "playbook_id": run.playbook_id,
        "server_id": run.server_id,
        "status": run.status,
        "params": run.params,
        "steps": run.steps,
        "error": run.error,
        "job_id": run.job_id,
        "duration_ms": run.duration_ms,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


async def run_playbook(
    session: AsyncSession,
    *,
    playbook: int | str,
    server_id: int | None = None,
    dry_run: bool = False,
    params: dict[str, Any] | None = None,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Validate and render a playbook; ``dry_run`` returns the plan, otherwise the run is
    queued (``playbook.run`` job) and its run id returned."""
    row = await _resolve(session, playbook)
    spec = _spec(row)
    if spec.server_specific and server_id is None:
        raise BadRequest(f"playbook {row.name} needs a server_id", fields=["server_id"])
    server = None
    if server_id is not None:
        server = await server_repo.get_server(session, server_id)
        if server is None:
            raise NotFound(f"Server {server_id} not found")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("params must be an object", fields=["params"])
    values = validate_params(spec, params or {})
    plan = render(spec, values)
    audit = {"playbook": row.name, "params": values, "dry_run": dry_run}

    async def record(result: dict[str, Any]) -> None:
        await ledger.record(
            "playbook_run",
            actor=actor,
            server_id=server_id,
            target=f"playbook:{row.name}",
            params=audit,
            result=result,
            request_id=request_id,
        )

    try:
        for step in plan:
            check_command_policy(step["command"])
            if step["rollback"]:
                check_command_policy(step["rollback"])
    except PolicyDenied as exc:
        await record({"status": "refused", "code": exc.code, "error": exc.message})
        raise
    base = {"playbook_id": row.id, "playbook": row.name, "server_id": server_id, "params": values}
    if dry_run:
        await record({"status": "validated", "steps": len(plan)})
        return {**base, "dry_run": True, "status": "validated", "plan": plan}
    run = repo.PlaybookRun(
        playbook_id=row.id,
        server_id=server_id,
        status="queued",
        params=values,
        steps=[],
        actor=actor,
        request_id=request_id,
    )
    session.add(run)
    await session.commit()
    job_id = await enqueue("playbook.run", {"run_id": run.id}, priority="normal")
    run.job_id = job_id
    await session.commit()
    await record({"status": "queued", "run_id": run.id, "job_id": job_id})
    return {
        **base,
        "dry_run": False,
        "status": "queued",
        "run_id": run.id,
        "job_id": job_id,
        "plan": plan,
    }


LOCAL = "local"


def _local_ref() -> ServerRef:
    return ServerRef(0, LOCAL, "local", Target(host="localhost"), True)


@job_handler("playbook.run")
async def _playbook_job(ctx: JobContext, *, run_id: int) -> dict[str, Any]:
    return await execute_run(run_id, ctx=ctx)


async def execute_run(run_id: int, *, ctx: JobContext | None = None) -> dict[str, Any]:
    """Run a queued playbook run's steps in order; on failure roll completed steps back."""
    db = get_database()
    async with db.session() as session:
        run = await session.get(repo.PlaybookRun, run_id)
        if run is None:
            raise NotFound(f"Playbook run {run_id} not found")
        row = await session.get(repo.Playbook, run.playbook_id)
        assert row is not None
        server = await server_repo.get_server(session, run.server_id) if run.server_id else None
        if run.server_id and server is None:
            run.status, run.error, run.finished_at = "failed", "server is gone", utcnow()
            return _full_run_view(run)
        ref = server_ref(server) if server is not None else _local_ref()
        plan = render(_spec(row), run.params)
        run.status, run.started_at = "running", utcnow()
        name, actor, request_id = row.name, run.actor, run.request_id
    runner = _StepRunner(run_id, name, ref, actor, request_id, ctx)
    started = time.perf_counter()
    try:
        failed_at = await _steps_then_rollbacks(runner, plan, ctx)
    except BaseException as exc:  # cancelled or crashed: never leave the run "running"
        async with db.session() as session:
            run = await session.get(repo.PlaybookRun, run_id)
            if run is not None:
                run.status, run.finished_at = "failed", utcnow()
                run.steps, run.error = runner.records, f"interrupted: {type(exc).__name__}"
        raise
    status = "succeeded" if failed_at is None else "failed"
    duration = round((time.perf_counter() - started) * 1000)
    error = None if failed_at is None else f"step {plan[failed_at]['name']!r} failed"
    async with db.session() as session:
        run = await session.get(repo.PlaybookRun, run_id)
        assert run is not None
        run.status, run.error, run.duration_ms = status, error, duration
        run.steps, run.finished_at = runner.records, utcnow()
        view = _full_run_view(run)

    async def audit_finish() -> None:
        await ledger.record(
            "playbook_run",
            actor=actor,
            server_id=ref.id or None,
            target=f"playbook:{name}",
            params={"run_id": run_id, "phase": "finished"},
            result={
                "status": status,
                "duration_ms": duration,
                "failed_step": failed_at,
                "rolled_back": [r["index"] for r in runner.records if r["phase"] == "rollback"],
            },
            request_id=request_id,
        )

    await (audit_finish() if ctx is None else ctx.step("finished", audit_finish))
    return view


async def _steps_then_rollbacks(
    runner: _StepRunner, plan: list[dict[str, Any]], ctx: JobContext | None
) -> int | None:
    """Run steps in order; at the first failure (not continue_on_error) run the rollbacks of
    the completed steps in reverse. Returns the failed step's index, or None."""
    for step in plan:
        record = await runner.run(step, phase="step")
        if ctx is not None:
            await ctx.progress((step["index"] + 1) / len(plan), f"step {step['name']}")
        if record["status"] != "ok" and not step["continue_on_error"]:
            for done in reversed(plan[: step["index"]]):
                if done["rollback"]:
                    await runner.run({**done, "command": done["rollback"]}, phase="rollback")
            return int(step["index"])
    return None


class _StepRunner:
    """Runs one step (or rollback), audits it, and saves the growing record list to the run.

    Under a job (``ctx``) each step runs at most once across redeliveries: a step completed by
    an earlier attempt is replayed from the job's steps, and one that was started but never
    recorded (its worker died mid-command) is not run again. Its outcome is unknown, so it
    counts as failed: the run stops there and the completed steps roll back.
    """

    def __init__(
        self,
        run_id: int,
        name: str,
        ref: ServerRef,
        actor: str,
        request_id: str | None,
        ctx: JobContext | None = None,
    ) -> None:
        self.run_id, self.name, self.ref = run_id, name, ref
        self.actor, self.request_id, self.ctx = actor, request_id, ctx
        self.records: list[dict[str, Any]] = []

    async def run(self, step: dict[str, Any], *, phase: str) -> dict[str, Any]:
        if self.ctx is None:
            record = await self._execute(step, phase=phase)
        else:
            record = await self._once(self.ctx, step, phase=phase)
        self.records.append(record)
        async with get_database().session() as session:
            run = await session.get(repo.PlaybookRun, self.run_id)
            if run is not None:
                run.steps = list(self.records)
        return record

    async def _once(self, ctx: JobContext, step: dict[str, Any], *, phase: str) -> dict[str, Any]:
        key = f"{phase}:{step['index']}"
        started = f"started:{key}"
        if key not in ctx.steps and started in ctx.steps:
            return await ctx.step(key, lambda: self._interrupted(step, phase=phase))
        await ctx.step(started, _nothing)
        return await ctx.step(key, lambda: self._execute(step, phase=phase))

    async def _execute(self, step: dict[str, Any], *, phase: str) -> dict[str, Any]:
        record = _record(step, phase)
        try:
            result = await run_on_server(self.ref, step["command"], timeout=step["timeout"])
        except ExecFlowError as exc:
            record |= {"status": "error", "error": {"code": exc.code, "message": exc.message}}
        else:
            record |= {
                "status": "ok" if result["exit_code"] == 0 else "failed",
                **result,
                "stdout": result["stdout"][:_KEPT_OUTPUT],
                "stderr": result["stderr"][:_KEPT_OUTPUT],
            }
        await self._audit(step, phase, record)
        return record

    async def _interrupted(self, step: dict[str, Any], *, phase: str) -> dict[str, Any]:
        record = _record(step, phase) | {
            "status": "error",
            "error": {
                "code": "WORKER_LOST",
                "message": "its worker was lost while the command ran; not repeated",
            },
        }
        await self._audit(step, phase, record)
        return record

    async def _audit(self, step: dict[str, Any], phase: str, record: dict[str, Any]) -> None:
        summary = {k: v for k, v in record.items() if k not in {"stdout", "stderr", "command"}}
        await ledger.record(
            "playbook_run",
            actor=self.actor,
            server_id=self.ref.id or None,
            target=f"playbook:{self.name}",
            params={
                "run_id": self.run_id,
                "phase": phase,
                "step": step["name"],
                "command": step["command"],
            },
            result=summary,
            request_id=self.request_id,
        )


def _record(step: dict[str, Any], phase: str) -> dict[str, Any]:
    return {
        "index": step["index"],
        "name": step["name"],
        "phase": phase,
        "command": step["command"],
    }


async def _nothing() -> None:
    return None
