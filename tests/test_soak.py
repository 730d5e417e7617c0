"""A short run of the soak test ci/soak.py (the CI default is 1000 steps), and
its checks on made-up records."""
import argparse
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOAK = os.path.join(REPO, "ci", "soak.py")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the soak test reads /proc")


def _load_soak():
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_short_soak_passes():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, SOAK, "--steps", "150", "--check-from", "50", "--timeout", "50"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "soak: passed" in proc.stdout
    for rank in (0, 1):
        assert f"soak: rank {rank}:" in proc.stdout and "running stats identical: True" in proc.stdout


def test_soak_checks_flag_leaks_and_divergence():
    soak = _load_soak()
    args = argparse.Namespace(steps=10, check_from=5, rss_tolerance=0.05)
    good = {"rss_mark": 100_000, "rss_end": 104_000, "fds_mark": 20, "fds_end": 20, "identical": True,
            "nonfinite": 0, "tracked": [10, 10]}
    assert soak.check(0, good, args) == []
    bad = dict(good, rss_end=106_000, fds_end=21, identical=False, nonfinite=2, tracked=[10, 9])
    problems = " | ".join(soak.check(1, bad, args))
    for needle in ("resident memory", "+6.0%", "file descriptors grew from 20 to 21", "not bitwise identical",
                   "2 steps had a non-finite loss", "num_batches_tracked [10, 9] != 10"):
        assert needle in problems, problems
    assert soak.rss_kib() > 0 and soak.open_fds() > 0


def test_soak_rejects_bad_options(capsys):
    soak = _load_soak()
    with pytest.raises(SystemExit) as exc:
        soak.main(["--steps", "10", "--check-from", "10"])
    assert exc.value.code == 2
    assert "--check-from must be in [1, --steps)" in capsys.readouterr().err
