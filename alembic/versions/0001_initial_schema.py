"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 17:41:30.680438
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "keyset_counters",
        sa.Column("wallet", sa.Text(), nullable=False),
        sa.Column("keyset_id", sa.String(length=66), nullable=False),
        sa.Column("next_counter", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("wallet", "keyset_id", name=op.f("pk_keyset_counters")),
    )
    op.create_table(
        "mints",
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        sa.Column("info", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("url", name=op.f("pk_mints")),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("wallet", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("mint_url", sa.Text(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("quote_id", sa.Text(), nullable=True),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error_severity", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("notify_task", sa.Text(), nullable=True),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
        sa.UniqueConstraint(
            "mint_url", "kind", "quote_id", name=op.f("uq_operations_mint_url_kind_quote_id")
        ),
    )
    op.create_index("ix_operations_kind_state", "operations", ["kind", "state"], unique=False)
    op.create_index(
        "ix_operations_wallet_created", "operations", ["wallet", "created_at"], unique=False
    )
    op.create_table(
        "proofs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("wallet", sa.Text(), nullable=False),
        sa.Column("mint_url", sa.Text(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("keyset_id", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("C", sa.Text(), nullable=False),
        sa.Column("y", sa.Text(), nullable=False),
        sa.Column("dleq", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("witness", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("used_by", sa.Uuid(), nullable=True),
        sa.Column("spent_by", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state IN ('unspent', 'reserved', 'pending', 'spent')",
            name=op.f("ck_proofs_state_valid"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_proofs_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proofs")),
        sa.UniqueConstraint("secret", name=op.f("uq_proofs_secret")),
    )
    op.create_index(
        "ix_proofs_selection",
        "proofs",
        ["wallet", "mint_url", "unit", "state", "amount"],
        unique=False,
    )
    op.create_index(op.f("ix_proofs_used_by"), "proofs", ["used_by"], unique=False)
    op.create_index(op.f("ix_proofs_y"), "proofs", ["y"], unique=False)
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("operation_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["operation_id"], ["operations.id"], name=op.f("fk_events_operation_id_operations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_operation_id"), "events", ["operation_id"], unique=False)
    op.create_index(
        "ix_events_unpublished",
        "events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "keysets",
        sa.Column("mint_url", sa.Text(), nullable=False),
        sa.Column("id", sa.String(length=66), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("input_fee_ppk", sa.Integer(), nullable=False),
        sa.Column("final_expiry", sa.BigInteger(), nullable=True),
        sa.Column("keys", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["mint_url"], ["mints.url"], name=op.f("fk_keysets_mint_url_mints")
        ),
        sa.PrimaryKeyConstraint("mint_url", "id", name=op.f("pk_keysets")),
    )


def downgrade() -> None:
    op.drop_table("keysets")
    op.drop_index(
        "ix_events_unpublished",
        table_name="events",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index(op.f("ix_events_operation_id"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_proofs_y"), table_name="proofs")
    op.drop_index(op.f("ix_proofs_used_by"), table_name="proofs")
    op.drop_index("ix_proofs_selection", table_name="proofs")
    op.drop_table("proofs")
    op.drop_index("ix_operations_wallet_created", table_name="operations")
    op.drop_index("ix_operations_kind_state", table_name="operations")
    op.drop_table("operations")
    op.drop_table("mints")
    op.drop_table("keyset_counters")
