"""an append-only audit record of every transition

Events cover four states per kind and say nothing of what moved. Every transition now
writes a row in its own transaction: the operation, from and to state, its version, the
counts and sums of its proofs by state (never a secret), its fee so far and its error code.
Proofs get an index on created_by, which that count reads.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operation_audit",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("operation_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("from_state", sa.Text(), nullable=False),
        sa.Column("to_state", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("proofs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=True),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["operation_id"],
            ["operations.id"],
            name=op.f("fk_operation_audit_operation_id_operations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operation_audit")),
    )
    op.create_index(
        op.f("ix_operation_audit_operation_id"), "operation_audit", ["operation_id"], unique=False
    )
    op.create_index(op.f("ix_proofs_created_by"), "proofs", ["created_by"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_proofs_created_by"), table_name="proofs")
    op.drop_index(op.f("ix_operation_audit_operation_id"), table_name="operation_audit")
    op.drop_table("operation_audit")
