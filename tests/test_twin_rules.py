"""The twin refuses kernels that break AscendC rules: a Python TwinError naming
the kernel and the rule, never a crash. The broken kernels are test-only
sources compiled into the twin library (op_kernels/twin/tests/broken_kernels.cpp);
the compile-time rule (scalar bf16 casts) has its planted source in
op_kernels/twin/tests/compile_fail/."""
import os
import shutil
import subprocess

import pytest
import torch

from npu_syncbn import twin, twin_build

CASES = [
    ("twin_broken_ub_overflow", "UB overflow", 1),
    ("twin_broken_misaligned_copy", "misaligned DataCopy", 1),
    ("twin_broken_queue_leak", "queue imbalance", 1),
    ("twin_broken_deque_empty", "queue imbalance", 1),
    ("twin_broken_double_alloc", "queue imbalance", 1),
    ("twin_broken_skip_syncall", "SyncAll imbalance", 4),
    ("twin_broken_gm_overrun", "GM out of bounds", 1),
    ("twin_broken_ub_overflow", "UB overflow", 48),
    ("twin_broken_syncall_not_mix", "SyncAll needs MIX", 4),
    ("twin_broken_soft_syncall_dirty", "SyncAll workspace", 8),
    ("twin_broken_ub_plan", "UB plan mismatch", 2),
    ("twin_broken_too_many_buffers", "too many buffers", 1),
    ("twin_broken_copy_params", "bad DataCopyParams", 1),
    ("twin_broken_repeat", "repeat over 255", 1),
    ("twin_broken_pipe_mte2_v", "pipe hazard", 1),
    ("twin_broken_pipe_v_mte3", "pipe hazard", 2),
    ("twin_broken_compares_count", "Compares count", 1),
    ("twin_broken_select_scratch", "Select scratch UB", 1),
]


def run(name, cores):
    lib = twin.library()
    rc = lib.twin_run_test_kernel(name.encode(), cores)
    if rc == 1:
        raise twin.TwinError(lib.twin_last_error().decode())
    assert rc == 0, lib.twin_last_error().decode()


@pytest.mark.parametrize("name,rule,cores", CASES)
def test_rule_break_raises_twin_error(name, rule, cores):
    with pytest.raises(twin.TwinError) as info:
        run(name, cores)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert name in str(err) and rule in str(err)
    assert err.kernel == name and err.rule == rule


def test_relu_gate_below_selects_scratch_passes():
    """The Compares + Select gate of the fused kernels, planned under 184 KiB, is legal."""
    run("twin_ok_relu_gate", 4)


def test_correct_kernel_passes_on_many_cores():
    for cores in (1, 8, 32):
        run("twin_ok_copy", cores)
        run("twin_ok_syncall_mix", cores)
        run("twin_ok_soft_syncall", cores)  # the same kernel as ..._dirty, on a zeroed workspace


def test_pipe_hazard_names_the_call_and_both_pipes():
    with pytest.raises(twin.TwinError, match=r"Adds \(V\) reads UB written by DataCopy \(MTE2\)"):
        run("twin_broken_pipe_mte2_v", 1)
    with pytest.raises(twin.TwinError, match=r"DataCopy \(MTE3\) reads UB written by Duplicate \(V\)"):
        run("twin_broken_pipe_v_mte3", 1)
    run("twin_ok_pipe_events", 4)  # the same two accesses, each after its event pair


@pytest.fixture
def auto_sync_off():
    twin.set_auto_sync(False)
    yield
    twin.set_auto_sync(True)


def test_scalar_read_after_deque_needs_an_event_without_compiler_auto_sync(auto_sync_off):
    """The queue orders MTE2 against V only; bisheng's --cce-auto-sync orders
    the scalar read (what ascendc_library builds with, the twin's default)."""
    with pytest.raises(twin.TwinError, match=r"GetValue \(S\) reads UB written by DataCopy \(MTE2\)"):
        run("twin_broken_pipe_scalar_after_deque", 1)
    twin.set_auto_sync(True)
    run("twin_broken_pipe_scalar_after_deque", 1)


@pytest.fixture
def vector_auto_sync_off():
    twin.set_vector_auto_sync(False)
    yield
    twin.set_vector_auto_sync(True)


def test_vector_read_after_write_needs_pipe_v_without_compiler_auto_sync(vector_auto_sync_off):
    """Off, a vector instruction reading an earlier one's output needs
    PipeBarrier<PIPE_V> (which --cce-auto-sync inserts); with it, it passes."""
    with pytest.raises(twin.TwinError, match=r"Add \(V\) reads UB written by Duplicate \(V\) with no PipeBarrier<PIPE_V>"):
        run("twin_broken_vector_raw", 1)
    run("twin_ok_vector_raw", 1)
    twin.set_vector_auto_sync(True)
    run("twin_broken_vector_raw", 1)


def test_our_kernels_rely_on_the_compiler_for_vector_chains(vector_auto_sync_off):
    """The kernels' vector chains (a Cast then the arithmetic on its output)
    take their PIPE_V barriers from --cce-auto-sync, as op_kernels/CMakeLists.txt
    states: modelled off, the first such read is named."""
    x = torch.randn(4, 13, 37)
    with pytest.raises(twin.TwinError, match=r"\(V\) reads UB written by .* \(V\) with no PipeBarrier<PIPE_V>"):
        twin.batch_norm_stats(x, 1e-5, block_dim=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_our_kernels_need_no_compiler_auto_sync(auto_sync_off, dtype):
    """Every cross-pipe dependency of the kernels (row and C-last paths) has its
    own barrier or event pair: none relies on the compiler's scalar syncs (the
    vector pipe's own chains do; see the test above)."""
    for shape in [(4, 13, 37), (2, 3, 70000), (64, 13), (1, 300, 5), (4, 13, 5, 7), (2, 9, 2, 3, 4)]:
        c = shape[1]
        x, dy = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
        if x.dim() > 3:  # the C-last kernels
            fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
            x, dy = x.to(memory_format=fmt), dy.to(memory_format=fmt)
        z, o = torch.zeros(c), torch.ones(c)
        twin.batch_norm_stats(x, 1e-5, block_dim=4)
        twin.batch_norm_elemt(x, o, z, z, o, 1e-5, block_dim=4)
        twin.batch_norm_backward_reduce(dy, x, z, o, o, True, True, True, block_dim=4)
        twin.batch_norm_backward_elemt(dy, x, z, o, o, z, z, torch.tensor([4, 4]), block_dim=4)
        twin.batch_norm_gather_stats(x, torch.randn(3, c), torch.rand(3, c) + 0.5, z.clone(), o.clone(), 0.1, 1e-5,
                                     torch.tensor([3.0, 4.0, 5.0]), block_dim=4)


def test_ub_plan_mismatch_names_both_numbers():
    with pytest.raises(twin.TwinError, match="allocated 20480 bytes of UB, the host tiling planned 4096"):
        run("twin_broken_ub_plan", 1)


@pytest.fixture
def soc_910b4():
    twin.set_soc("Ascend910B4")
    yield
    twin.set_soc("")


def test_block_dim_above_the_socs_cores_is_an_error(soc_910b4):
    assert twin.soc() == {"name": "Ascend910B4", "vector_cores": 40, "ub_bytes": 192 * 1024}
    run("twin_ok_syncall_mix", 40)
    with pytest.raises(twin.TwinError, match="block_dim 48 outside 1..40, the vector cores of Ascend910B4") as info:
        run("twin_ok_syncall_mix", 48)
    assert info.value.rule == "block_dim over cores"
    x = torch.randn(4, 64, 8)  # 64 channels: elemt would use all 48 cores
    with pytest.raises(twin.TwinError, match="block_dim over cores"):
        twin.batch_norm_elemt(x, None, None, torch.zeros(64), torch.ones(64), 1e-5, block_dim=48)
    twin.batch_norm_elemt(x, None, None, torch.zeros(64), torch.ones(64), 1e-5, block_dim=40)
    assert twin.traffic()["block_dim"] == 40


def test_soc_from_the_environment_and_families(monkeypatch):
    try:
        monkeypatch.setenv("NPU_SYNCBN_SOC", "Ascend910B3")
        twin.set_soc("")
        assert twin.soc()["vector_cores"] == 40
        twin.set_soc("Ascend910_9391")  # an A3 part takes its family's entry
        assert twin.soc()["name"] == "Ascend910_93" and twin.soc()["vector_cores"] == 48
        with pytest.raises(ValueError, match="unknown SoC 'Ascend310P3'"):
            twin.set_soc("Ascend310P3")
    finally:
        monkeypatch.delenv("NPU_SYNCBN_SOC")
        twin.set_soc("")
    assert twin.soc()["name"] == "Ascend910B2"


def _compile(source: str, tmp_path) -> subprocess.CompletedProcess:
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not found: the compile-time twin rule cannot be checked")
    root = twin_build.kernels_root()
    path = tmp_path / "kernel.cpp"
    path.write_text(source)
    return subprocess.run([cxx, "-std=c++17", "-fsyntax-only", "-I", os.path.join(root, "twin", "include"), str(path)],
                          capture_output=True, text=True)


def test_scalar_bf16_cast_does_not_compile(tmp_path):
    """bisheng for dav-2201 rejects scalar bf16 casts; so does the twin, naming the rule."""
    planted = os.path.join(twin_build.kernels_root(), "twin", "tests", "compile_fail", "bf16_scalar_cast.cpp")
    source = open(planted).read()
    broken = _compile(source, tmp_path)
    assert broken.returncode != 0 and "twin rule 'scalar bf16 cast'" in broken.stderr
    # control: the same kernel with AscendC's scalar helper compiles
    fixed = source.replace("static_cast<float>(t.GetValue(0))", "ToFloat(t.GetValue(0))")
    assert fixed != source
    ok = _compile(fixed, tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_twin_stays_usable_after_a_failure():
    with pytest.raises(twin.TwinError):
        run("twin_broken_skip_syncall", 8)
    run("twin_ok_copy", 8)
    import torch

    mean, _ = twin.batch_norm_stats(torch.ones(2, 3, 4), 1e-5, block_dim=8)
    assert mean.tolist() == [1.0, 1.0, 1.0]
