"""The NPU route of the five ops, checked on CPU: float64 input takes the aten
fallback per call (our AscendC kernels take float32/float16/bfloat16 only),
and the AscendC library finds its namespace defined with our schemas."""
import types

import pytest
import torch

from npu_syncbn.ops import npu

# Where each op's `input` is (the backward ops take grad_out first).
INPUT_POSITION = {
    "batch_norm_stats": 0,
    "batch_norm_gather_stats_with_counts": 0,
    "batch_norm_elemt": 0,
    "batch_norm_backward_reduce": 1,
    "batch_norm_backward_elemt": 1,
    "batch_norm_elemt_act": 0,
    "batch_norm_backward_reduce_relu": 2,
}


def _spy(calls, tag):
    def fn(*args):
        calls.append(tag)
        return tag
    return fn


@pytest.mark.parametrize("name", sorted(INPUT_POSITION))
@pytest.mark.parametrize("marked", ["input", "other", "none"])
def test_float64_input_takes_fallback(name, marked, monkeypatch):
    # routing only: stand-in arguments, so the ops' validators are switched off here
    monkeypatch.setattr(npu, "VALIDATORS", {k: (lambda *a: None, n) for k, (_, n) in npu.VALIDATORS.items()})
    calls = []
    route = npu.routed(name, _spy(calls, "ascendc"), _spy(calls, "fallback"))
    n_args = len(getattr(torch.ops.npu_syncbn, name).default._schema.arguments)
    args = [types.SimpleNamespace(dtype=torch.float32) for _ in range(n_args)]
    pos = INPUT_POSITION[name]
    if marked == "input":
        args[pos] = types.SimpleNamespace(dtype=torch.float64)
    elif marked == "other":  # float64 elsewhere (e.g. weight) does not decide the route
        args[(pos + 1) % n_args] = types.SimpleNamespace(dtype=torch.float64)
    assert route(*args) == ("fallback" if marked == "input" else "ascendc")
    assert len(calls) == 1


def test_our_kernels_get_the_ops_validation_first():
    """The host glue sizes a launch from the input alone: a short weight must be
    refused before the kernel would read past it on the device."""
    calls = []
    route = npu.routed("batch_norm_elemt", _spy(calls, "ascendc"), _spy(calls, "fallback"))
    x, c = torch.randn(4, 6, 5), torch.ones(6)
    with pytest.raises(ValueError, match=r"weight must have shape \(6,\)"):
        route(x, torch.ones(3), None, c, c, 1e-5)
    assert calls == []
    assert route(x, c, None, c, c, 1e-5) == "ascendc"


def test_float64_fallback_gives_float64_statistics():
    # The gather is the fallback that runs on CPU too (the others are aten ops torch has for devices only).
    calls = []
    name = "batch_norm_gather_stats_with_counts"
    route = npu.routed(name, _spy(calls, "ascendc"), npu.FALLBACK_KERNELS[name])
    x = torch.randn(6, 3, 5, dtype=torch.float64) + 1e8  # float32 statistics would lose every digit of the variance
    parts = (x[:2], x[2:])
    mean = torch.stack([p.mean(dim=(0, 2)) for p in parts])
    invstd = torch.stack([(p.var(dim=(0, 2), unbiased=False) + 1e-5).rsqrt() for p in parts])
    counts = torch.tensor([p.numel() / 3 for p in parts], dtype=torch.float64)
    m, s = route(x, mean, invstd, None, None, 0.1, 1e-5, counts)
    assert calls == [] and m.dtype == s.dtype == torch.float64
    torch.testing.assert_close(m, x.mean(dim=(0, 2)), rtol=0, atol=1e-7)
    torch.testing.assert_close(s, (x.var(dim=(0, 2), unbiased=False) + 1e-5).rsqrt(), rtol=1e-7, atol=0)


def test_custom_library_namespace_has_our_schemas(monkeypatch, tmp_path):
    loaded = []
    monkeypatch.setattr(npu.importlib, "import_module", lambda name: loaded.append(name))
    monkeypatch.setattr(torch.ops, "load_library", lambda path: loaded.append(path))
    ops = npu._load_custom_kernels(str(tmp_path / npu.LIBRARY_FILE))
    assert loaded == ["torch_npu", str(tmp_path / npu.LIBRARY_FILE)]  # torch_npu before the library
    assert sorted(ops) == sorted(INPUT_POSITION)
    for name, op in ops.items():
        ours = str(getattr(torch.ops.npu_syncbn, name).default._schema)
        assert str(op.default._schema) == ours.replace("npu_syncbn::", f"{npu.ASCENDC_NAMESPACE}::", 1)
