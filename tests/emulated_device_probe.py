"""Run as a script with NPU_SYNCBN_EMULATE_NPU=1 (tests/test_emulated_device.py):
the device must be registered before first use, so its single-process checks
run here, in one subprocess. Each probe records what it saw; the last line of
stdout is the JSON of all records, which the tests compare with expectations.
A probe that raises records its error instead, so one failure names itself.
"""
import copy
import io
import json
import sys
import traceback
from contextlib import redirect_stdout

import torch
import torch.nn as nn

import npu_syncbn
from npu_syncbn import emulation
from npu_syncbn.ops import npu as npu_ops

SEEN = {}


def probe(fn):
    try:
        SEEN[fn.__name__] = fn()
    except Exception:
        SEEN[fn.__name__] = {"error": traceback.format_exc()}
    return fn


def dev(t):
    return str(t.device)


@probe
def device_module():
    out = {"active": emulation.active(), "route": npu_ops.ROUTE, "available": torch.npu.is_available(),
           "count": torch.npu.device_count(), "start": torch.npu.current_device()}
    torch.npu.set_device(torch.npu.device_count() - 1)
    out["after_int"] = torch.npu.current_device()
    torch.npu.set_device("npu:1")
    out["after_str"] = torch.npu.current_device()
    torch.npu.set_device(torch.device("npu", 2))
    out["after_device"] = torch.npu.current_device()
    out["new_tensor_on_current"] = dev(torch.empty(1, device="npu"))
    torch.npu.synchronize()
    torch.npu.synchronize("npu:0")
    try:
        torch.npu.set_device(torch.npu.device_count())
        out["bad_index"] = "accepted"
    except ValueError as e:
        out["bad_index"] = str(e)
    torch.npu.set_device(0)
    return out


def _deepcopy_keeps(t):
    c = copy.deepcopy(nn.ParameterList([nn.Parameter(t)]))[0]
    return [dev(c), torch.equal(c.detach().cpu(), t.cpu()), c.data_ptr() != t.data_ptr()]


def _save_load_keeps(t):
    buffer = io.BytesIO()
    torch.save({"t": t}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)["t"]
    return [dev(loaded), torch.equal(loaded.cpu(), t.cpu())]


@probe
def placement():
    x = torch.arange(6.0).reshape(2, 3)
    return {
        "device_1": dev(torch.zeros(2, device=torch.device("npu", 1))),
        "to": dev(x.to("npu")), "to_index": dev(x.to("npu:2")), "npu": dev(x.npu()), "npu_index": dev(x.npu(3)),
        "is_npu": x.npu().is_npu, "round_trip_equal": torch.equal(x.npu().cpu(), x), "cpu": dev(x.npu().cpu()),
        "module": dev(next(nn.Linear(2, 2).npu().parameters())),
        "deepcopy": _deepcopy_keeps(x.npu()), "save_load": _save_load_keeps(x.npu()),
    }



@probe
def factories():
    out = {}
    for name, make in {
        "empty": lambda d: torch.empty(2, 3, device=d), "zeros": lambda d: torch.zeros(2, 3, device=d),
        "ones": lambda d: torch.ones(2, 3, device=d), "full": lambda d: torch.full((2, 3), 7.5, device=d),
        "arange": lambda d: torch.arange(0, 10, 3, device=d), "eye": lambda d: torch.eye(3, device=d),
        "linspace": lambda d: torch.linspace(-1, 1, 5, device=d),
    }.items():
        t = make("npu")
        equal = True if name == "empty" else torch.equal(t.cpu(), make("cpu"))
        out[name] = [dev(t), equal]
    torch.manual_seed(5)
    a = torch.randn(4, device="npu")
    torch.manual_seed(5)
    out["randn_seeded_like_cpu"] = [dev(a), torch.equal(a.cpu(), torch.randn(4))]
    return out


@probe
def views_and_in_place():
    x = torch.arange(12.0, device="npu")
    v = x.view(3, 4)
    v[1].mul_(10)  # in place through a view
    t = v.t()
    t[0].add_(100)  # through a transposed (strided) view: column 0 of v
    s = x[2:5]
    s.zero_()
    expected = torch.arange(12.0)
    expected.view(3, 4)[1].mul_(10)
    expected.view(3, 4).t()[0].add_(100)
    expected[2:5].zero_()
    ptr = x.untyped_storage().data_ptr()
    shares = all(u.untyped_storage().data_ptr() == ptr for u in (v, t, s))
    return {"devices": sorted({dev(u) for u in (x, v, t, s)}), "storage_device": str(x.untyped_storage().device),
            "views_share_storage": shares, "values_equal": torch.equal(x.cpu(), expected)}


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5 * 5, 4))


@probe
def training_step_equals_cpu():
    cpu = _net()
    npu = copy.deepcopy(cpu).npu()
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 3, 1, 2])
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (cpu, npu)]
    losses = []
    for _ in range(3):
        for m, opt, xx, tt in ((cpu, opts[0], x, target), (npu, opts[1], x.npu(), target.npu())):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(xx), tt)
            loss.backward()
            opt.step()
            losses.append(loss)
    params_equal = all(torch.equal(a.cpu(), b) for a, b in zip(npu.parameters(), cpu.parameters()))
    return {"param_devices": sorted({dev(p) for p in npu.parameters()}), "loss_device": dev(losses[-1]),
            "bitwise_equal": params_equal, "losses_equal": float(losses[-1].cpu()) == float(losses[-2])}


@probe
def host_transfers():
    t = torch.arange(4.0, device="npu")
    counts = {}

    def count(name, fn):
        before = emulation.host_transfers()
        fn()
        counts[name] = emulation.host_transfers() - before

    count("item", lambda: t[1].item())
    count("tolist", lambda: t.tolist())
    count("cpu", lambda: t.cpu())
    count("to_cpu", lambda: t.to("cpu"))
    count("bool", lambda: bool(t[1]))
    count("float", lambda: float(t[2]))

    def show():
        with redirect_stdout(io.StringIO()):
            print(t)

    count("print", show)
    count("on_device_math", lambda: (t * 2 + t.sum()).exp_().mean(0).view(1).clone())
    count("host_to_device", lambda: torch.ones(3).npu())
    return counts


@probe
def sync_batchnorm_step_makes_no_transfer():
    out = {}
    for momentum in (0.1, None):
        m = npu_syncbn.SyncBatchNorm(4, momentum=momentum).npu()
        x = torch.randn(6, 4, 3, 3, device="npu", requires_grad=True)
        g = torch.randn(6, 4, 3, 3, device="npu")
        before = emulation.host_transfers()
        for _ in range(2):
            m(x).backward(g)
        out[str(momentum)] = emulation.host_transfers() - before
        out[f"{momentum}_output_device"] = dev(m(x))
    return out


@probe
def kernel_errors():
    """A kernel breaking an AscendC rule in the twin, and the op refusing the same input."""
    x = torch.randn(4, 6, 5, device="npu")
    mean, invstd, short = torch.zeros(6, device="npu"), torch.ones(6, device="npu"), torch.ones(3, device="npu")
    out = {}
    for name, op in (("raw_kernel", torch.ops.npu_syncbn_ascendc.batch_norm_elemt),
                     ("public_op", torch.ops.npu_syncbn.batch_norm_elemt)):
        try:
            op(x, short, None, mean, invstd, 1e-5)
            out[name] = "no error"
        except Exception as e:  # noqa: BLE001 (the type is part of what is recorded)
            out[name] = f"{type(e).__name__}: {e}".splitlines()[0]
    # the device still works after a failed launch
    out["after"] = torch.ops.npu_syncbn.batch_norm_stats(x, 1e-5)[0].shape[0]
    return out


@probe
def soc_limits():
    """Whatever the SoC (NPU_SYNCBN_SOC), the launch limits come from it: a
    step normalizes like float64 BatchNorm with NPU_SYNCBN_BLOCK_DIM unset."""
    x = torch.randn(64, 8, 33, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = npu_syncbn.SyncBatchNorm(8).npu()(x.float().npu())
    ref = nn.BatchNorm1d(8).double()(x)
    return {"max_err": float((y.cpu().double() - ref).abs().max()), "device": dev(y)}


if __name__ == "__main__":
    sys.stdout.flush()
    print(json.dumps(SEEN))
