"""scripts/dev.py, the way to try it by hand: a test mint that runs until Ctrl-C, and
invoices that mint pays."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mint_harness import free_port

from nuts.invoices import read_invoice

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "dev.py"


def test_dev_invoice_prints_an_invoice_for_the_amount() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "invoice", "100"], capture_output=True, text=True, check=True
    ).stdout.strip()

    terms = read_invoice(out)
    assert (terms.amount_msat, terms.network) == (100_000, "bc")


@pytest.mark.mint
def test_dev_mint_serves_until_interrupted() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "mint", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/info", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the mint never answered"
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/info", timeout=2)
