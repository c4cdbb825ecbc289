"""jobs: leases, dispatch bookkeeping and change stamps on jobs; the schedules table.

Revision ID: 0003_jobs
Revises: 0002_ledger
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_jobs"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_expires_at", TS))
        batch.add_column(sa.Column("dispatched_at", TS))
        batch.add_column(sa.Column("updated_at", TS))
        batch.add_column(sa.Column("schedule_id", sa.Integer))
        batch.create_index("ix_jobs_updated_at", ["updated_at"])
        batch.create_index("ix_jobs_schedule_id", ["schedule_id"])
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("job_name", sa.String(100), nullable=False),
        sa.Column("args", JSON, nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("next_run_at", TS, index=True),
        sa.Column("last_run_at", TS),
        sa.Column("last_job_id", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("schedules")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_schedule_id")
        batch.drop_index("ix_jobs_updated_at")
        batch.drop_column("schedule_id")
        batch.drop_column("updated_at")
        batch.drop_column("dispatched_at")
        batch.drop_column("lease_expires_at")
