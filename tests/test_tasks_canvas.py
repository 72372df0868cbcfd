"""The public step tasks in Celery's canvas: a chain hands each step the Operation the step
before it returned."""

from __future__ import annotations

import pytest
from celery import Celery, chain
from mint_harness import make_invoice
from task_helpers import TIMEOUT, assert_balance, fund

pytestmark = pytest.mark.mint


def test_a_chain_of_send_prepare_and_execute_makes_the_token(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    fund(celery_client, wallet, mint_url, 100)
    steps = chain(
        celery_client.signature(
            "cashu.send.prepare",
            kwargs={"wallet": wallet, "mint_url": mint_url, "amount": 30},
            queue="cashu",
        ),
        celery_client.signature("cashu.send.execute", queue="cashu"),
    )

    sent = steps.apply_async().get(timeout=TIMEOUT)

    assert sent["state"] == "pending" and sent["token"]
    assert_balance(celery_client, wallet, spendable=100 - 30 - sent["fee"], pending=30)


def test_a_chain_of_melt_prepare_and_execute_pays_the_invoice(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    fund(celery_client, wallet, mint_url, 300)
    steps = chain(
        celery_client.signature(
            "cashu.melt.prepare",
            kwargs={"wallet": wallet, "mint_url": mint_url, "invoice": make_invoice(100)},
            queue="cashu",
        ),
        celery_client.signature("cashu.melt.execute", queue="cashu"),
    )

    paid = steps.apply_async().get(timeout=TIMEOUT)

    assert paid["state"] == "finalized"
    assert paid["effective_fee"] <= paid["fee_reserve"] + paid["swap_fee"] + paid["input_fee"]
    assert_balance(celery_client, wallet, spendable=300 - 100 - paid["effective_fee"])
