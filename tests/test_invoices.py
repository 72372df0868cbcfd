"""Reading bolt11 invoices: BOLT 11's own examples, and agreement with the bolt11 package."""

from __future__ import annotations

import bolt11
import pytest
from mint_harness import make_invoice, make_invoice_without_amount

from nuts.invoices import InvoiceError, read_invoice

# BOLT 11's examples: "1 cup coffee" (2500u, expires in 60 s) and a donation without amount
COFFEE = (
    "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqs"
    "yqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu9qrsgquk0rl77nj30yxdy8j9vdx85fkpmdl"
    "a2087ne0xh8nhedh8w27kyke0lp53ut353s06fv3qfegext0eh0ymjpf39tuven09sam30g4vgpfna3rh"
)
DONATION = (
    "lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5"
    "rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq9qrs"
    "gq357wnc5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap9us6v52vjjsrvywa6rt52cm9r9zqt8r2t7mlcwspyetp"
    "5h2tztugp9lfyql"
)


def test_reads_the_spec_coffee_invoice() -> None:
    terms = read_invoice(COFFEE)

    assert (terms.amount_msat, terms.timestamp, terms.expiry) == (250_000_000, 1496314658, 60)


def test_an_invoice_without_amount_or_expiry_field_reads_as_none_and_one_hour() -> None:
    terms = read_invoice(DONATION)

    assert (terms.amount_msat, terms.timestamp, terms.expiry) == (None, 1496314658, 3600)


@pytest.mark.parametrize("amount_sat, expiry", [(1, 60), (5, 3600), (21_000, 86_400), (10**8, 7)])
def test_agrees_with_the_bolt11_package(amount_sat: int, expiry: int) -> None:
    invoice = make_invoice(amount_sat, expiry=expiry)
    full = bolt11.decode(invoice)

    terms = read_invoice(invoice)

    assert (terms.amount_msat, terms.timestamp, terms.expiry) == (
        full.amount_msat,
        full.date,
        full.expiry,
    )


def test_an_amountless_invoice_agrees_with_the_bolt11_package() -> None:
    invoice = make_invoice_without_amount(expiry=120)

    terms = read_invoice(invoice)

    assert (terms.amount_msat, terms.expiry) == (None, 120)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "lnbc1garbage",
        COFFEE[:-1] + ("q" if COFFEE[-1] != "q" else "p"),  # checksum broken
        COFFEE.replace("lnbc", "lnxx", 1),
        "lnbc1qqqqqqqqqqqqqqqqqqqqqqq",  # no room for a signature
        "x" * 10_000,
        None,
        42,
    ],
    ids=["empty", "garbage", "checksum", "prefix", "short", "huge", "none", "number"],
)
def test_anything_else_is_an_invoice_error(text: object) -> None:
    with pytest.raises(InvoiceError):
        read_invoice(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("network", ["bc", "tb", "tbs", "bcrt"])
def test_reads_the_network_an_invoice_is_for(network: str) -> None:
    assert read_invoice(make_invoice(21, network=network)).network == network
