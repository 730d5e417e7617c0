"""How long a collective may wait for a missing rank ($NPU_SYNCBN_TIMEOUT).

Its own module so that comm.py (process groups) and shm.py (the shared-memory
channel, which comm.py uses) both read it without importing each other."""
from __future__ import annotations

import datetime
import os

ENV_TIMEOUT = "NPU_SYNCBN_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


def default_timeout() -> datetime.timedelta:
    """How long a collective may wait for a missing rank: $NPU_SYNCBN_TIMEOUT seconds, default 300."""
    raw = os.environ.get(ENV_TIMEOUT, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_TIMEOUT} must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"{ENV_TIMEOUT} must be > 0 seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)
