"""The out= overloads: every op aten has an ``.out`` form of exists here with
aten's schema and resize semantics; a synchronized BatchNorm written by hand
with out= calls on 2 ranks equals float64 BatchNorm on the global batch."""
import warnings

import pytest
import torch
import torch.distributed as dist

import npu_syncbn  # noqa: F401  (registers the ops)
from npu_syncbn.ops import reference as ref

OPS = torch.ops.npu_syncbn
NAMES = ("batch_norm_stats", "batch_norm_gather_stats_with_counts", "batch_norm_elemt",
         "batch_norm_backward_reduce", "batch_norm_backward_elemt")


@pytest.mark.parametrize("name", NAMES)
def test_out_overload_exists_where_aten_has_one_with_aten_arguments(name):
    aten = getattr(torch.ops.aten, name)
    assert "out" in aten.overloads()
    mine = getattr(OPS, name).out._schema
    theirs = aten.out._schema
    assert [a.name for a in mine.arguments] == [a.name for a in theirs.arguments]
    assert [a.kwarg_only for a in mine.arguments] == [a.kwarg_only for a in theirs.arguments]
    assert len(mine.returns) == len(theirs.returns)


def _samples():
    g = torch.Generator().manual_seed(2)
    x, dy = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    mean, invstd = ref.batch_norm_stats(x.double(), 1e-5)
    mean, invstd = mean.float(), invstd.float()
    w, b = torch.rand(3, generator=g) + 0.5, torch.randn(3, generator=g)
    s1, s2 = (dy.double().sum((0, 2))).float(), (dy.double() * (x.double() - mean.double()[:, None])).sum((0, 2)).float()
    rows = torch.stack([mean, mean + 1]), torch.stack([invstd, invstd])
    return {
        "batch_norm_stats": (x, 1e-5),
        "batch_norm_gather_stats_with_counts": (x, *rows, None, None, 0.1, 1e-5, torch.tensor([20.0, 10.0])),
        "batch_norm_elemt": (x, w, b, mean, invstd, 1e-5),
        "batch_norm_backward_reduce": (dy, x, mean, invstd, w, True, True, True),
        "batch_norm_backward_elemt": (dy, x, mean, invstd, w, s1, s2, torch.tensor([20], dtype=torch.int32)),
    }


def _outs(name, result, make):
    results = result if isinstance(result, tuple) else (result,)
    keys = ("out",) if len(results) == 1 else tuple(f"out{i}" for i in range(len(results)))
    return results, {k: make(r) for k, r in zip(keys, results)}


@pytest.mark.parametrize("name", NAMES)
def test_out_writes_the_functional_result_into_empty_outputs_without_warning(name):
    args = _samples()[name]
    results, outs = _outs(name, getattr(OPS, name)(*args), lambda r: torch.empty(0, dtype=r.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        returned = getattr(OPS, name)(*args, **outs)
    returned = returned if isinstance(returned, tuple) else (returned,)
    for got, out, want in zip(returned, outs.values(), results):
        assert got is out and torch.equal(out, want)


@pytest.mark.parametrize("name", NAMES)
def test_out_of_the_right_shape_is_written_in_place(name):
    args = _samples()[name]
    results, outs = _outs(name, getattr(OPS, name)(*args), lambda r: torch.full_like(r, 7.0))
    ptrs = [o.data_ptr() for o in outs.values()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(OPS, name)(*args, **outs)
    assert [o.data_ptr() for o in outs.values()] == ptrs
    assert all(torch.equal(o, r) for o, r in zip(outs.values(), results))


def test_non_empty_out_of_another_shape_is_resized_with_a_warning_as_aten_does():
    args = _samples()["batch_norm_elemt"]
    out = torch.zeros(2, 2)
    with pytest.warns(UserWarning, match=r"resized from shape \(2, 2\) to the required shape \(4, 3, 5\)"):
        OPS.batch_norm_elemt(*args, out=out)
    assert out.shape == (4, 3, 5) and torch.equal(out, OPS.batch_norm_elemt(*args))


def test_out_of_another_dtype_receives_the_cast_result_and_bad_outputs_are_named():
    args = _samples()["batch_norm_stats"]
    mean, invstd = OPS.batch_norm_stats(*args)
    m64, s64 = torch.empty(3, dtype=torch.float64), torch.empty(3, dtype=torch.float64)
    OPS.batch_norm_stats(*args, out0=m64, out1=s64)
    assert torch.equal(m64, mean.double()) and torch.equal(s64, invstd.double())
    with pytest.raises(ValueError, match="out1 must be on the input's device cpu, got meta"):
        OPS.batch_norm_stats(*args, out0=torch.empty(3), out1=torch.empty(3, device="meta"))


@pytest.mark.parametrize("name", NAMES)
def test_out_overloads_pass_opcheck(name):
    args = _samples()[name]
    _, outs = _outs(name, getattr(OPS, name)(*args), lambda r: torch.empty_like(r))
    torch.library.opcheck(getattr(OPS, name).out, args, outs, test_utils=("test_schema", "test_faketensor"))


def test_out_forms_compile_into_one_graph():
    """torch.compile functionalizes them (outputs of the right shape, as
    fullgraph=True needs for aten's out= ops too) and gives eager's values."""
    x, w, b, mean, invstd, eps = _samples()["batch_norm_elemt"]

    def step(x, y, m, s):
        OPS.batch_norm_stats(x, eps, out0=m, out1=s)
        OPS.batch_norm_elemt(x, w, b, m, s, eps, out=y)
        return y * 2

    outs = [torch.empty_like(x), torch.empty(3), torch.empty(3)]
    doubled = torch.compile(step, fullgraph=True)(x, *outs)
    eager_mean, eager_invstd = OPS.batch_norm_stats(x, eps)
    eager = OPS.batch_norm_elemt(x, w, b, eager_mean, eager_invstd, eps)
    assert torch.equal(outs[1], eager_mean) and torch.equal(outs[2], eager_invstd)
    assert torch.equal(outs[0], eager) and torch.equal(doubled, eager * 2)


def hand_written_sync_bn_with_out(rank, world_size):
    """torch.nn.SyncBatchNorm's data flow written with preallocated outputs."""
    g = torch.Generator().manual_seed(33)
    X, G = torch.randn(7, 3, 6, generator=g) * 3 + 2, torch.randn(7, 3, 6, generator=g)
    mine = slice(0, 4) if rank == 0 else slice(4, 7)
    x, dy = X[mine], G[mine]
    w, b, eps = torch.tensor([1.5, 0.5, 2.0]), torch.tensor([0.1, -0.2, 0.3]), 1e-5
    rm, rv = torch.zeros(3), torch.ones(3)
    row = torch.empty(7)  # [mean | invstd | count]
    OPS.batch_norm_stats(x, eps, out0=row[:3], out1=row[3:6])
    row[6] = x.numel() / 3
    rows = [torch.empty(7) for _ in range(world_size)]
    dist.all_gather(rows, row)
    rows = torch.stack(rows)
    mean, invstd = torch.empty(0), torch.empty(0)
    OPS.batch_norm_gather_stats_with_counts(x, rows[:, :3], rows[:, 3:6], rm, rv, 0.1, eps, rows[:, 6], out0=mean, out1=invstd)
    y = torch.empty_like(x)
    OPS.batch_norm_elemt(x, w, b, mean, invstd, eps, out=y)
    sums = torch.empty(6)
    gw, gb = torch.empty(3), torch.empty(3)
    OPS.batch_norm_backward_reduce(dy, x, mean, invstd, w, True, True, True, out0=sums[:3], out1=sums[3:], out2=gw, out3=gb)
    dist.all_reduce(sums)
    dx = torch.empty(0)
    OPS.batch_norm_backward_elemt(dy, x, mean, invstd, w, sums[:3], sums[3:], rows[:, 6].to(torch.int32), out=dx)
    for t in (gw, gb):
        dist.all_reduce(t)
    bn = torch.nn.BatchNorm1d(3).double()
    with torch.no_grad():
        bn.weight.copy_(w), bn.bias.copy_(b)
    Xr = X.double().requires_grad_(True)
    (bn(Xr) * G.double()).sum().backward()
    return {
        "y": float((y.double() - _ref_output(X, w, b, eps)[mine]).abs().max()),
        "dx": float((dx.double() - Xr.grad[mine]).abs().max()),
        "gw": float((gw.double() - bn.weight.grad).abs().max()),
        "gb": float((gb.double() - bn.bias.grad).abs().max()),
        "rm": float((rm.double() - bn.running_mean).abs().max()),
        "rv": float((rv.double() - bn.running_var).abs().max()),
    }


def _ref_output(X, w, b, eps):
    Xd = X.double()
    mean, var = Xd.mean((0, 2)), Xd.var((0, 2), unbiased=False)
    return (Xd - mean[:, None]) / (var[:, None] + eps).sqrt() * w.double()[:, None] + b.double()[:, None]


def test_hand_written_sync_bn_with_out_equals_global_batchnorm(ranks):
    for rank, errs in enumerate(ranks(2).run(hand_written_sync_bn_with_out)):
        assert max(errs.values()) < 1e-4, f"rank {rank}: {errs}"
