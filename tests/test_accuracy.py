"""The accuracy tool (npu_syncbn/accuracy.py): runs, reports, and can fail."""
import json
import os
import subprocess
import sys

import torch

from conftest import REPO, emulated_device_built
from npu_syncbn import accuracy


def test_twin_quick_run_passes_and_writes_json(tmp_path, capsys):
    path = tmp_path / "acc.json"
    rc = accuracy.main(["--impl", "twin", "--quick", "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "max_rel" in out and "batch_norm_backward_elemt" in out
    data = json.loads(path.read_text())
    rows = [r for r in data["results"] if r["impl"] == "twin" and r["op"] in accuracy.TWIN_OPS]
    assert {r["op"] for r in rows} == set(accuracy.TWIN_OPS)
    assert {r["dtype"] for r in rows} >= {"float32", "float16", "bfloat16"}
    assert all(r["status"] == "PASS" for r in rows)
    assert data["summary"]["PASS"] == len(rows)
    # the fused activation's ops have no twin binding: skipped, saying where they run
    fused = [r for r in data["results"] if r["impl"] == "twin" and r["op"] not in accuracy.TWIN_OPS]
    assert fused and all(r["status"] == "SKIP" and "NPU_SYNCBN_EMULATE_NPU" in r["note"] for r in fused)


def test_fused_ops_on_the_emulated_npu_pass(tmp_path):
    """The AscendC fused-activation kernels, through the emulated npu device, against float64."""
    emulated_device_built()
    env = dict(os.environ, NPU_SYNCBN_EMULATE_NPU="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    path = tmp_path / "acc.json"
    cmd = [sys.executable, "-m", "npu_syncbn.accuracy", "--impl", "npu", "--quick", "--json", str(path),
           "--op", "batch_norm_elemt_act,batch_norm_backward_reduce_relu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(path.read_text())["results"]
    assert {r["op"] for r in rows} == {"batch_norm_elemt_act", "batch_norm_backward_reduce_relu"}
    assert rows and all(r["status"] == "PASS" for r in rows)


def test_compare_catches_a_wrong_output():
    args, expect, _ = accuracy.make_case("batch_norm_stats", (2, 3, 4), 0.0, torch.float32)
    good = tuple(e.float() for e in expect)
    assert accuracy.compare(good, expect)[1] < 1e-6
    bad = (good[0] + 1e-2, good[1])
    assert accuracy.compare(bad, expect)[1] > accuracy.THRESHOLDS[torch.float32]


def test_failing_case_sets_exit_status(monkeypatch):
    real = accuracy._run

    def broken(impl, op, args):
        outs = real(impl, op, args)
        return tuple(o * 1.01 if o is not None else o for o in outs)

    monkeypatch.setattr(accuracy, "_run", broken)
    assert accuracy.main(["--impl", "twin", "--quick", "--op", "batch_norm_elemt"]) == 1


def test_missing_implementation_is_skipped_with_a_reason(capsys):
    results = accuracy.run(["npu"], quick=True)
    ok, reason = accuracy.impl_available("npu")
    if not ok:
        assert [r.status for r in results] == ["SKIP"] and reason
        assert "[skip] npu" in capsys.readouterr().out


def test_formula_table_our_kernels_keep_float32_accuracy_where_sums_of_squares_cancel():
    """At |mean|/std = 1e3 the sum/sum-of-squares variance loses about
    ratio² · 2⁻²⁴ ≈ 6e-2 of invstd to cancellation; our kernels (shifted sums,
    Σdy·(x−mean)) stay at float32 rounding."""
    from npu_syncbn import formulas

    flat, large = formulas.compare(ratios=(1.0, 1e3))
    for row in (flat, large):
        assert row["invstd_ours"] < 1e-6 and row["sum_dy_xmu_ours"] < 1e-5, row
    assert flat["invstd_sum_sq"] < 1e-5  # no cancellation without an offset: the replay is sound
    assert 1e-2 < large["invstd_sum_sq"] < 1.0, large
    assert large["sum_dy_xmu_sum_sq"] > 3 * large["sum_dy_xmu_ours"], large


def test_formulas_cli_prints_every_ratio(capsys):
    from npu_syncbn import accuracy

    assert accuracy.main(["--formulas"]) == 0
    out = capsys.readouterr().out
    for ratio in ("1e+00", "1e+02", "1e+03", "1e+04"):
        assert ratio in out


def test_every_skip_prints_its_reason(capsys):
    """Skipped cases are counted and each distinct reason is printed with the
    implementation and ops it covers, not one reason for all of them."""
    rc = accuracy.main(["--impl", "twin,npu", "--quick", "--op", "batch_norm_stats,batch_norm_elemt_act"])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = [line for line in out.splitlines() if line.strip().startswith("skipped ")]
    assert any(line.strip().startswith("skipped twin:") and "batch_norm_elemt_act" in line
               and "NPU_SYNCBN_EMULATE_NPU" in line for line in lines), out
    if not accuracy.impl_available("npu")[0]:
        assert any(line.strip().startswith("skipped npu: the whole implementation:") for line in lines), out
    skipped = int(out.split(" skipped")[0].rsplit(", ", 1)[1])
    assert skipped == sum(int(line.split(" cases")[0].rsplit(" ", 1)[1]) if " cases of " in line else 1
                          for line in lines)


def test_help_is_plain_text_and_lists_the_ops():
    run = subprocess.run([sys.executable, "-m", "npu_syncbn.accuracy", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert ":mod:" not in run.stdout and "``" not in run.stdout
    assert all(op in run.stdout for op in accuracy.OPS)
    assert "cpu" in run.stdout and "twin" in run.stdout and "npu" in run.stdout
