"""Traffic plane: VaultShield rules, change version and statistics; eShield threats, quarantines.

Revision ID: 0006_traffic
Revises: 0005_webhooks
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006_traffic"
down_revision = "0005_webhooks"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "vaultshield_rules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), index=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("value", sa.String(1024), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "vaultshield_state",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    state = sa.table(
        "vaultshield_state",
        sa.column("key", sa.String),
        sa.column("version", sa.Integer),
        sa.column("updated_at", TS),
    )
    op.bulk_insert(state, [{"key": "rules", "version": 1, "updated_at": dt.datetime.now(dt.UTC)}])
    op.create_table(
        "vaultshield_traffic",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, nullable=False, index=True),
        sa.Column("proxy_id", sa.String(64), nullable=False),
        sa.Column("minute", TS, nullable=False, index=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("allowed", sa.Integer, nullable=False),
        sa.Column("blocked", sa.Integer, nullable=False),
        sa.Column("challenged", sa.Integer, nullable=False),
        sa.Column("rate_limited", sa.Integer, nullable=False),
        sa.Column("logged", sa.Integer, nullable=False),
        sa.Column("rule_hits", JSON, nullable=False),
        sa.Column("clients", JSON, nullable=False),
        sa.UniqueConstraint("site_id", "proxy_id", "minute"),
    )
    op.create_table(
        "threat_indicators",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("type", sa.String(16), nullable=False, index=True),
        sa.Column("value", sa.String(512), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("confidence", sa.Integer, nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("metadata", JSON, nullable=False),
        sa.UniqueConstraint("type", "value"),
    )
    op.create_table(
        "quarantines",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("addresses", JSON, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("forced", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, index=True),
        sa.Column("released_at", TS),
        sa.Column("released_by", sa.String(200)),
    )
    op.create_index("ix_quarantines_status_target", "quarantines", ["status", "target"])


def downgrade() -> None:
    op.drop_index("ix_quarantines_status_target", table_name="quarantines")
    for table in (
        "quarantines",
        "threat_indicators",
        "vaultshield_traffic",
        "vaultshield_state",
        "vaultshield_rules",
    ):
        op.drop_table(table)
