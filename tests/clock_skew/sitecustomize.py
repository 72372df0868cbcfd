"""A host whose clock is wrong, for tests: Python loads this at start in a process whose
PYTHONPATH holds this folder, and that process's clock (time.time, datetime.now) runs
CASHU_TEST_CLOCK_SKEW_SECONDS ahead, or behind when negative. The database's and Redis's
clocks are untouched, as on a real host."""

import datetime as _datetime
import os
import time as _time

_SKEW = float(os.environ.get("CASHU_TEST_CLOCK_SKEW_SECONDS") or 0)

if _SKEW:
    _real_time = _time.time
    _time.time = lambda: _real_time() + _SKEW

    class _SkewedDatetime(_datetime.datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return super().now(tz) + _datetime.timedelta(seconds=_SKEW)

        @classmethod
        def utcnow(cls):  # type: ignore[override]
            return super().now(_datetime.UTC).replace(tzinfo=None) + _datetime.timedelta(
                seconds=_SKEW
            )

    _datetime.datetime = _SkewedDatetime  # type: ignore[misc]
