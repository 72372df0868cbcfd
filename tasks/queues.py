"""The queues and the routes: every public task runs on "cashu"; the beat's periodic work
and the event relay run on "cashu.beat", so a backlog of one never starves the other; the
melt's execute and pay and its steps (the pre-swap, the melt request, which may wait on a
Lightning payment, and the polls) run on "cashu.lightning", so a burst of payments neither
holds nor queues before the workers everything else needs."""

from __future__ import annotations

PUBLIC_QUEUE = "cashu"
BEAT_QUEUE = "cashu.beat"
LIGHTNING_QUEUE = "cashu.lightning"
TASK_MODULES = [  # the task modules a worker imports
    "tasks.mints",
    "tasks.wallet",
    "tasks.mint",
    "tasks.melt",
    "tasks.send",
    "tasks.receive",
    "tasks.ops",
    "tasks.history",
    "tasks.recovery",
    "tasks.events",
]
TASK_ROUTES = {
    "cashu.beat.*": {"queue": BEAT_QUEUE},
    "cashu.events.*": {"queue": BEAT_QUEUE},
    # a melt's requests at the mint: a burst of payments never queues before users' work
    # (a caller without these routes sends execute and pay to cashu: they hand over)
    "cashu.melt.execute": {"queue": LIGHTNING_QUEUE},
    "cashu.melt.pay": {"queue": LIGHTNING_QUEUE},
    "cashu.melt.step.*": {"queue": LIGHTNING_QUEUE},
}
