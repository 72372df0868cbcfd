"""After everything else (pytest runs files in name order, hence the zz): the session's
worker log, scanned for every secret the suite used. None may appear (docs/design.md rule 9).

The secrets come from the database the whole session wrote to: every proof's secret, every
blinding factor and secret of the outputs written ahead, every token handed out, the master
mnemonic and each wallet's derived mnemonic.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import Operation, StoredProof

pytestmark = pytest.mark.mint


def secrets_used(saga_context) -> dict[str, set[str]]:
    from db_harness import TEST_MNEMONIC

    from nuts.secrets import derive_wallet_mnemonic

    found: dict[str, set[str]] = {"proof secret": set(), "blinding factor": set(), "token": set()}
    with saga_context.uow() as session:
        found["proof secret"].update(session.scalars(select(StoredProof.secret)))
        wallets = set(session.scalars(select(Operation.wallet).distinct()))
        for data in session.scalars(select(Operation.data)):
            for value in data.values():
                if isinstance(value, list):  # outputs written ahead: secret and r
                    for output in value:
                        if isinstance(output, dict) and "r" in output:
                            found["blinding factor"].add(output["r"])
                            found["proof secret"].add(output["secret"])
            if isinstance(data.get("token"), str):
                found["token"].add(data["token"])
    found["mnemonic"] = {TEST_MNEMONIC} | {
        derive_wallet_mnemonic(TEST_MNEMONIC, w) for w in list(wallets)[:200]
    }
    return found


def test_no_secret_of_the_whole_suite_reaches_the_worker_log(celery_worker, saga_context) -> None:
    log = celery_worker.log_path.read_text(errors="replace")
    used = secrets_used(saga_context)

    assert len(log) > 10_000  # the worker did work this session
    assert len(used["proof secret"]) > 100 and used["token"]
    leaks = {
        kind: [value[:12] + "..." for value in values if value and value in log][:3]
        for kind, values in used.items()
    }
    # A mnemonic leaks word by word too: any run of 4 of its words in a row.
    words_in_log = set(log.split())
    for phrase in used["mnemonic"]:
        words = phrase.split()
        for start in range(len(words) - 3):
            run = " ".join(words[start : start + 4])
            if set(words[start : start + 4]) <= words_in_log and run in log:
                leaks.setdefault("mnemonic words", []).append(run[:12] + "...")
    assert not any(leaks.values()), leaks
