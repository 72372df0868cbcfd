"""one live receive per wallet and token; melts found by their invoice

A token's receive was unique per mint and token, for every wallet and in every state: a
receive that one wallet left prepared, or that the mint refused (rolled back), made that
token impossible to receive for everybody. Now a receive is unique per wallet and token
while it is not rolled back; the mint decides which wallet's swap wins. Other kinds keep
one operation per quote. Melts get an index on their invoice, to refuse a second payment
of an invoice one of ours is already paying.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("uq_operations_mint_url_kind_quote_id", "operations", type_="unique")
    op.create_index(
        "uq_operations_mint_url_kind_quote_id",
        "operations",
        ["mint_url", "kind", "quote_id"],
        unique=True,
        postgresql_where=sa.text("kind <> 'receive'"),
    )
    op.create_index(
        "uq_operations_receive_token_wallet",
        "operations",
        ["mint_url", "quote_id", "wallet"],
        unique=True,
        postgresql_where=sa.text("kind = 'receive' AND state <> 'rolled_back'"),
    )
    op.create_index(
        "ix_operations_melt_request",
        "operations",
        [sa.text("(data ->> 'request')")],
        postgresql_where=sa.text("kind = 'melt'"),
    )


def downgrade() -> None:
    op.drop_index("ix_operations_melt_request", table_name="operations")
    op.drop_index("uq_operations_receive_token_wallet", table_name="operations")
    op.drop_index("uq_operations_mint_url_kind_quote_id", table_name="operations")
    op.create_unique_constraint(
        "uq_operations_mint_url_kind_quote_id", "operations", ["mint_url", "kind", "quote_id"]
    )
