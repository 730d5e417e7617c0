"""One builder at a time for a build output, and no wait on a builder that died.

``exclusive(lock_path, what)`` holds an exclusive ``fcntl.flock`` on
``lock_path`` while the caller builds. The operating system drops such a lock
when its holder exits, however it exits (SIGKILL, the OOM killer, a timeout),
so a killed build never blocks a later run: the next run takes the lock and
builds again. A run that finds the lock held waits for the holder, which is
then alive by construction, and says so: which process, since when, every
minute. Two ranks that start together thus build once; the second finds the
result and loads it.

The lock file holds the holder's process id and host for those messages
only. flock needs a local file system (on some network file systems it locks
per host only).

Standard library only: setup.py runs the builders before torch is importable.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from typing import Callable, Iterator, Optional

REPORT_EVERY_S = 60.0
_POLL_S = 0.25


def _say(message: str) -> None:
    print(f"npu_syncbn: {message}", file=sys.stderr, flush=True)


def _holder(fd: int, settle_s: float = 0.0) -> str:
    """Who holds the lock, from the pid and host it writes right after taking
    it; waits up to ``settle_s`` for that line (a holder that has just taken
    the lock may not have written it yet)."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            text = os.pread(fd, 200, 0).decode(errors="replace").split()
        except OSError:
            text = []
        if len(text) >= 2:
            return f"process {text[0]} on {text[1]}"
        if time.monotonic() >= deadline:
            return "another process"
        time.sleep(0.05)


@contextlib.contextmanager
def exclusive(lock_path: str, what: str, say: Callable[[str], None] = _say,
              timeout_s: Optional[float] = None) -> Iterator[None]:
    """Hold the build lock ``lock_path`` for building ``what``; wait (saying
    who holds it) while another live process builds it. ``timeout_s``: give
    up with TimeoutError after that long (default: wait as long as the holder
    lives)."""
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the compiler processes
    try:
        _acquire(fd, lock_path, what, say, timeout_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, lock_path: str, what: str, say: Callable[[str], None], timeout_s: Optional[float]) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    start = last_report = time.monotonic()
    say(f"waiting for {_holder(fd, settle_s=2.0)}, which is building {what} (lock {lock_path})")
    while True:
        time.sleep(_POLL_S)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            say(f"{what}: the other build finished after {time.monotonic() - start:.0f} s of waiting")
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if timeout_s is not None and now - start > timeout_s:
            raise TimeoutError(f"{what}: {_holder(fd)} still holds {lock_path} after {timeout_s:.0f} s")
        if now - last_report >= REPORT_EVERY_S:
            last_report = now
            say(f"still waiting for {_holder(fd)} to finish building {what} ({now - start:.0f} s so far)")
