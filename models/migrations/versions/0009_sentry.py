"""Sentry V: monitor state, probe results, incidents and incident timelines.

Revision ID: 0009_sentry
Revises: 0008_agents
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009_sentry"
down_revision = "0008_agents"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def _site_fk() -> sa.ForeignKey:
    return sa.ForeignKey("sites.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "sentry_monitors",
        sa.Column("site_id", sa.Integer, _site_fk(), primary_key=True),
        sa.Column("next_due_at", TS, nullable=False, index=True),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("consecutive_successes", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("last_ok", sa.Boolean),
        sa.Column("last_failures", JSON, nullable=False),
        sa.Column("last_probe_at", TS),
    )
    op.create_table(
        "sentry_probe_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, _site_fk(), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("scheduled_for", TS),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("severity", sa.String(16)),
        sa.Column("status_code", sa.Integer),
        sa.Column("latency_ms", sa.Float),
        sa.Column("failures", JSON, nullable=False),
        sa.Column("warnings", JSON, nullable=False),
        sa.Column("checks", JSON, nullable=False),
    )
    op.create_index("ix_sentry_probe_results_site_ts", "sentry_probe_results", ["site_id", "ts"])
    op.create_table(
        "sentry_incidents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, _site_fk(), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("severity", sa.String(16), nullable=False, index=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("failures", JSON, nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("resolved_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "sentry_incident_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "incident_id",
            sa.Integer,
            sa.ForeignKey("sentry_incidents.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("ts", TS, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", JSON, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "sentry_incident_events",
        "sentry_incidents",
        "sentry_probe_results",
        "sentry_monitors",
    ):
        op.drop_table(table)
