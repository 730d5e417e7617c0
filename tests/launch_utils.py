"""Running the launcher (``python -m npu_syncbn.launch``, or its console script
``npu-syncbn-run``) as a subprocess from a test, with a time limit.

``run_launcher`` starts the launcher in a session of its own, collects its
output as text and, when it overruns, kills the whole session (launcher and
workers) and fails the test with what it printed so far.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_MODULE = (sys.executable, "-m", "npu_syncbn.launch")


def launcher_env(**extra) -> dict:
    """``os.environ`` with the repository first on ``PYTHONPATH``, plus ``extra``."""
    env = os.environ.copy()
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


class LaunchResult(subprocess.CompletedProcess):
    """A ``CompletedProcess`` plus ``elapsed``, the wall seconds from start to
    exit. Unpacks as ``rc, out, err, elapsed``."""

    def __init__(self, args, returncode, stdout, stderr, elapsed: float):
        super().__init__(args, returncode, stdout, stderr)
        self.elapsed = elapsed

    def __iter__(self):
        return iter((self.returncode, self.stdout, self.stderr, self.elapsed))


def run_launcher(args, timeout, cwd=None, env=None, *, launcher=LAUNCH_MODULE, merge_stderr=False) -> LaunchResult:
    """Run ``python -m npu_syncbn.launch ARGS`` (or ``[*launcher, *ARGS]``) in
    ``cwd`` with ``env`` (default :func:`launcher_env`), stdout and stderr
    collected as text (stderr folded into stdout when ``merge_stderr``, then
    ``stderr`` is None). Past ``timeout`` seconds its whole session is killed
    and the test fails."""
    cmd = [*launcher, *args]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=launcher_env() if env is None else env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        stderr = "" if err is None else f"\nstderr:\n{err}"
        pytest.fail(f"{' '.join(map(str, cmd))} did not finish within {timeout} s\nstdout:\n{out}{stderr}")
    return LaunchResult(cmd, proc.returncode, out, err, time.monotonic() - start)
