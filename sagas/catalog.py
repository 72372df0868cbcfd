"""Every saga, in one list. A saga module registers its spec, steps and recovery rules
when it is imported; importing this module imports them all, so whoever needs every saga
(the recovery sweep, metrics, a worker) imports this, not a saga for its side effect."""

from __future__ import annotations

from sagas import melt, mint, receive, send

SAGAS = (mint, melt, send, receive)
KINDS = tuple(saga.KIND for saga in SAGAS)
