"""a receive's token hash in its own column; no payment method on send and receive

A receive kept the hash of its token's proofs' Ys in quote_id, and every operation carried
method "bolt11", though a send or receive pays no invoice. The hash moves to token_hash,
which takes over the receive's uniqueness (per mint, token and wallet, while not rolled
back); method becomes nullable and is NULL for sends and receives.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("operations", sa.Column("token_hash", sa.Text(), nullable=True))
    _move_receive_uniqueness("quote_id", "token_hash")
    op.alter_column("operations", "method", existing_type=sa.Text(), nullable=True)
    op.execute("UPDATE operations SET method = NULL WHERE kind IN ('send', 'receive')")


def downgrade() -> None:
    op.execute("UPDATE operations SET method = 'bolt11' WHERE method IS NULL")
    op.alter_column("operations", "method", existing_type=sa.Text(), nullable=False)
    _move_receive_uniqueness("token_hash", "quote_id")
    op.drop_column("operations", "token_hash")


def _move_receive_uniqueness(source: str, target: str) -> None:
    """Move receives' token hashes from column `source` to `target`, and their uniqueness
    (one live receive per mint, token and wallet) with them."""
    op.drop_index("uq_operations_receive_token_wallet", table_name="operations")
    op.execute(f"UPDATE operations SET {target} = {source}, {source} = NULL WHERE kind = 'receive'")
    op.create_index(
        "uq_operations_receive_token_wallet",
        "operations",
        ["mint_url", target, "wallet"],
        unique=True,
        postgresql_where=sa.text("kind = 'receive' AND state <> 'rolled_back'"),
    )
