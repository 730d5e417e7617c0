"""End-to-end tests of the benchmark CLI (``python -m npu_syncbn.bench``).

The benchmark runs as a subprocess with 2 gloo ranks on a tiny shape. Only
the structure of its output is checked: timings depend on the machine and its
load and are never asserted.
"""
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from npu_syncbn import bench  # noqa: E402

TIMEOUT_S = 35


def run_bench(*args, timeout=TIMEOUT_S):
    env = os.environ.copy()
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(
        [sys.executable, "-m", "npu_syncbn.bench", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def positive_finite(value, where):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{where} = {value!r}"


@pytest.mark.parametrize("extra", [[], ["--sync-mode", "allreduce", "--dtype", "bfloat16", "--channels-last", "--bind-cores"]],
                         ids=["default", "allreduce-bf16-cl"])
def test_bench_end_to_end(tmp_path, extra):
    out = tmp_path / "out.json"
    proc = run_bench("--shape", "4,8,5,5", "--reps", "3", "--warmup", "1", "--world-size", "2", "--json", str(out), *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    header = next(line for line in proc.stdout.splitlines() if line.startswith("shape") and "sync_ms" in line)
    for column in bench.COLUMNS:
        assert column in header.split(), f"column {column!r} missing from {header!r}"
    assert any(line.startswith("4x8x5x5") for line in proc.stdout.splitlines())
    assert "ring model" in proc.stdout and "memory kept for backward" in proc.stdout
    # How the ranks ran is part of the result.
    assert "rank cores: " in proc.stdout and "rank malloc settings: " in proc.stdout

    report = json.loads(out.read_text())
    assert report["config"]["world_size"] == 2
    (row,) = report["results"]
    assert row["shape"] == [4, 8, 5, 5] and row["world_size"] == 2
    assert row["dtype"] == ("bfloat16" if extra else "float32")
    assert row["layout"] == ("channels_last" if extra else "contiguous")
    if extra:
        assert row["sync_mode"] == "allreduce"
    for kind in ("sync", "local", "collectives"):
        for part in ("step_ms", "forward_ms"):
            stat = row[kind][part]
            assert stat["n"] == 3
            for key in ("median", "q1", "q3", "min", "max"):
                positive_finite(stat[key], f"{kind}.{part}.{key}")
            assert stat["iqr"] >= 0 and math.isfinite(stat["iqr"])
    positive_finite(row["sync_over_local"], "sync_over_local")
    assert math.isfinite(row["sync_minus_collectives_over_local"])  # a difference of medians: sign not asserted
    positive_finite(row["bytes_per_rank"], "bytes_per_rank")
    # The floor: read and copy passes timed in the same run, combined as 4 reads + 2 copies.
    for key in ("floor_ms", "read_ms", "copy_ms"):
        assert row[key]["n"] == 3
        positive_finite(row[key]["median"], f"{key}.median")
    for key in ("read_GBps", "copy_GBps", "sync_over_floor"):
        positive_finite(row[key], key)
    assert row["sync_over_floor"] == pytest.approx(row["sync"]["step_ms"]["median"] / row["floor_ms"]["median"])
    assert "floor = 4 reads + 2 copies" in proc.stdout and "sync/floor" in header.split()
    # Each C kernel beside the floor, and the fused BN + add + ReLU against the unfused one.
    assert set(row["kernels"]) == {"stats", "elemt", "reduce", "backward_elemt"}
    for name, k in row["kernels"].items():
        positive_finite(k["GBps"], f"kernels.{name}.GBps")
        assert k["over_copy_bandwidth"] == pytest.approx(k["GBps"] / row["copy_GBps"])
    assert row["kernels_over_floor"] == pytest.approx(row["kernels_ms"] / row["floor_ms"]["median"])
    # The step beyond the kernels: the rendezvous wait (timed in C) and the rest.
    assert row["sync_wait_ms"]["n"] == 3 and row["sync_wait_ms"]["min"] >= 0
    assert math.isfinite(row["step_beyond_kernels_and_wait_ms"])  # a difference of medians: sign not asserted
    assert "wait_ms" in proc.stdout and "rest_ms" in proc.stdout
    for kind in ("fused", "unfused"):
        positive_finite(row[kind]["step_ms"]["median"], f"{kind}.step_ms")
    assert row["fused_over_unfused"] == pytest.approx(row["fused"]["step_ms"]["median"] / row["unfused"]["step_ms"]["median"])
    assert "fused BN + add + ReLU" in proc.stdout
    for key in ("activation_bytes", "sync_saved_bytes", "local_saved_bytes", "sync_saved_activations",
                "local_saved_activations", "sync_over_local_saved"):
        positive_finite(row["memory"][key], f"memory.{key}")

    # The bare collectives replay what SyncBatchNorm issues; bytes follow the ring model.
    plan = row["collective_plan"]
    assert [p["phase"] for p in plan][-1] == "backward" and "forward" in [p["phase"] for p in plan]
    # Numbers stay right either way (the bench replays the traced collectives),
    # but the model in bench.collective_plan must follow function.py.
    assert row["collective_plan_source"] == "collective_plan", "update bench.collective_plan to match function.py"
    assert row["transport"] in ("shm", "gloo")
    assert sum(p["bytes"] for p in plan) == pytest.approx(row["bytes_per_rank"])
    for p in plan:
        assert p["bytes"] == pytest.approx(bench.ring_bytes_per_rank(p["collective"], p["numel"], p["itemsize"], 2))


def test_floor_is_six_reads_and_two_writes():
    # A copy is a read and a write: 6 reads + 2 writes = 4 reads + 2 copies.
    read, write = 0.25, 0.5
    assert bench.floor_seconds(read, read + write) == pytest.approx(6 * read + 2 * write)


def test_ring_model():
    assert bench.ring_bytes_per_rank("all_gather", 10, 4, 1) == 0
    assert bench.ring_bytes_per_rank("all_reduce", 10, 4, 1) == 0
    assert bench.ring_bytes_per_rank("all_gather", 10, 4, 4) == 3 * 10 * 4
    assert bench.ring_bytes_per_rank("all_reduce", 10, 4, 4) == pytest.approx(2 * 3 / 4 * 10 * 4)
    plan = bench.collective_plan(64, "allgather", fingerprint_check=False)
    assert [(k, n) for _, k, n, _ in plan] == [("all_gather", 2 * 64 + 5), ("all_reduce", 128)]


@pytest.mark.parametrize(
    "args, option",
    [
        (["--shape", "4"], "--shape"),
        (["--shape", "4,a"], "--shape"),
        (["--dtype", "int8"], "--dtype"),
        (["--world-size", "0"], "--world-size"),
        (["--reps", "0"], "--reps"),
    ],
)
def test_bad_arguments(args, option, capsys):
    # argparse errors come before anything is spawned: run in process, it is fast.
    with pytest.raises(SystemExit) as exc:
        bench.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err, err


def test_plot_without_matplotlib_names_the_extra(capsys, monkeypatch):
    real = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--plot", "x.png"])
    assert exc.value.code == 2
    assert "pip install .[plot]" in capsys.readouterr().err


def test_bad_argument_subprocess_message():
    proc = run_bench("--shape", "4")
    assert proc.returncode == 2
    assert "argument --shape" in proc.stderr and "2 to 5 dims" in proc.stderr


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no os.sched_getaffinity on this platform")
def test_core_groups_pin_disjoint_shares_or_nothing():
    cores = sorted(os.sched_getaffinity(0))
    assert bench.core_groups(False, 1, 1) is None
    groups = bench.core_groups(True, 1, 1)
    assert groups == [cores]
    if len(cores) >= 2:
        two = bench.core_groups(True, 2, 1)
        assert len(two) == 2 and not set(two[0]) & set(two[1]) and sorted(two[0] + two[1]) == cores
    # More ranks x threads than cores: pinning would stack ranks, so none.
    assert bench.core_groups(True, len(cores) + 1, 1) is None
    assert bench.core_groups(True, 1, len(cores) + 1) is None


def test_rank_environment_keeps_what_the_user_set(monkeypatch):
    for key in bench.MALLOC_TUNING:
        monkeypatch.delenv(key, raising=False)
    assert bench.rank_environment(True) == bench.MALLOC_TUNING
    assert bench.rank_environment(False) == {}
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123")
    assert "MALLOC_TRIM_THRESHOLD_" not in bench.rank_environment(True)
