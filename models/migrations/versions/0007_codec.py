"""CompactEdge: compacted assets.

Revision ID: 0007_codec
Revises: 0009_sentry
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007_codec"
down_revision = "0009_sentry"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "compact_assets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("compact_id", sa.String(40), nullable=False, unique=True, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("asset_url", sa.Text),
        sa.Column("source_name", sa.String(255)),
        sa.Column("quality_target", sa.Float, nullable=False),
        sa.Column("format_preference", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(8)),
        sa.Column("original_bytes", sa.BigInteger),
        sa.Column("compact_bytes", sa.BigInteger),
        sa.Column("rendition_format", sa.String(8)),
        sa.Column("rendition_bytes", sa.BigInteger),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("certificate", JSON),
        sa.Column("error", JSON),
        sa.Column("restored", JSON),
        sa.Column("created_by", sa.String(100)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
    )


def downgrade() -> None:
    op.drop_table("compact_assets")
