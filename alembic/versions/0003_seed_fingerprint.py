"""the master seed's fingerprint, one row

Every worker, beat and command derives wallets from one master mnemonic. A host started
with another one (a forgotten WALLET_MNEMONIC in development, a mistyped secret) would
write proofs no restore from the real seed can find. The first process to use the database
stores a fingerprint of its seed here; every later one must match it or refuses to start.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "seed_fingerprint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_seed_fingerprint_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seed_fingerprint")),
    )


def downgrade() -> None:
    op.drop_table("seed_fingerprint")
