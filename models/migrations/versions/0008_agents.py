"""Agents: tasks, their steps, approvals and agent schedules.

Revision ID: 0008_agents
Revises: 0006_traffic
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008_agents"
down_revision = "0006_traffic"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent_tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("requested_agent", sa.String(16)),
        sa.Column("agent_type", sa.String(16), index=True),
        sa.Column("route_reason", sa.Text),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("server_id", sa.Integer),
        sa.Column("status", sa.String(24), nullable=False, index=True),
        sa.Column("autonomy", JSON, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("job_id", sa.Integer, index=True),
        sa.Column("schedule_id", sa.Integer),
        sa.Column("model_backend", sa.String(16), nullable=False),
        sa.Column("final_answer", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created_at", TS, nullable=False, index=True),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "agent_task_steps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "task_id",
            sa.Integer,
            sa.ForeignKey("agent_tasks.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("agent", sa.String(16)),
        sa.Column("tool", sa.String(64)),
        sa.Column("call_id", sa.String(100)),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("status", sa.String(16)),
        sa.Column("content", sa.Text),
        sa.Column("args", JSON),
        sa.Column("result", JSON),
        sa.Column("result_sha256", sa.String(64)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.UniqueConstraint("idempotency_key", name="uq_agent_step_key"),
    )
    op.create_table(
        "agent_approvals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "task_id",
            sa.Integer,
            sa.ForeignKey("agent_tasks.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("call_id", sa.String(100), nullable=False),
        sa.Column("agent", sa.String(16), nullable=False),
        sa.Column("tool", sa.String(64), nullable=False),
        sa.Column("args", JSON, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("decision_args", JSON),
        sa.Column("comment", sa.Text),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False, index=True),
        sa.Column("decided_at", TS),
        sa.UniqueConstraint("task_id", "call_id", name="uq_agent_approval_call"),
    )
    op.create_table(
        "agent_schedules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("cron", sa.String(100)),
        sa.Column("trigger", JSON),
        sa.Column("task", sa.Text),
        sa.Column("playbook", sa.String(200)),
        sa.Column("params", JSON, nullable=False),
        sa.Column("agent_type", sa.String(16)),
        sa.Column("server_id", sa.Integer),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("autonomy", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("next_run_at", TS, index=True),
        sa.Column("last_run_at", TS),
        sa.Column("last_task_id", sa.Integer),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_schedules")
    op.drop_table("agent_approvals")
    op.drop_table("agent_task_steps")
    op.drop_table("agent_tasks")
