"""Executor: playbooks registered from YAML files and their runs.

Revision ID: 0004_executor
Revises: 0003_jobs
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004_executor"
down_revision = "0003_jobs"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "playbooks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("server_specific", sa.Boolean, nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("source", sa.String(1024)),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "playbook_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "playbook_id",
            sa.Integer,
            sa.ForeignKey("playbooks.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("server_id", sa.Integer, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("steps", JSON, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(64)),
        sa.Column("job_id", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
    )


def downgrade() -> None:
    op.drop_table("playbook_runs")
    op.drop_table("playbooks")
