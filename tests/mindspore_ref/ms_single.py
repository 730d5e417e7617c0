"""MindSpore side of tests/test_mindspore_parity.py, run in the MindSpore venv
(never imported by the test's python, which has torch).

    python ms_single.py SPEC.json INPUTS.npz OUT_DIR

Runs every case of SPEC on one CPU process in PyNative mode and writes
OUT_DIR/out.npz (arrays) and OUT_DIR/out.json (names, errors, load results).
A case's steps call the layer on ``x``, take the gradient of sum(y * g) with
respect to the input and the trainable parameters, and record the moving
statistics after each step.
"""
import json
import sys

import numpy as np

import mindspore as ms
from mindspore import Tensor, mint, nn


def make(front, kwargs):
    cls = nn.SyncBatchNorm if front == "nn" else mint.nn.SyncBatchNorm
    return cls(**kwargs)


def params(net):
    # copies: asnumpy() may share the parameter's memory, which later steps update in place
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


class Wrapped(nn.Cell):
    """A network holding the layer as ``bn``: names as in a checkpoint of a real model."""

    def __init__(self, layer):
        super().__init__()
        self.bn = layer

    def construct(self, x):
        return self.bn(x)


def run_case(case, inputs, arrays):
    net = make(case["front"], case["kwargs"])
    weights = net.trainable_params()
    for i, step in enumerate(case["steps"]):
        net.set_train(step["mode"] == "train")
        x, g = Tensor(inputs[step["x"]]), Tensor(inputs[step["g"]])

        def loss(x_, g_):
            y_ = net(x_)
            return (y_ * g_).sum(), y_

        grad_fn = ms.value_and_grad(loss, grad_position=0, weights=weights or None, has_aux=True)
        (_, y), grads = grad_fn(x, g)
        key = f"{case['id']}/{i}/"
        arrays[key + "y"] = y.asnumpy()
        dx, dw = (grads if weights else (grads, ()))
        arrays[key + "dx"] = dx.asnumpy()
        for p, d in zip(weights, dw):
            arrays[key + "d_" + p.name] = d.asnumpy().copy()
        for name, value in params(net).items():
            arrays[key + "p_" + name] = value


def names(front, kwargs):
    bare = make(front, kwargs)
    net = Wrapped(make(front, kwargs))
    return {
        "bare": [[p.name, bool(p.requires_grad)] for p in bare.get_parameters()],
        "net": [[p.name, bool(p.requires_grad)] for p in net.get_parameters()],
        "affine": getattr(bare, "affine", None),
        "training": bool(bare.training),
    }


def error_of(front, kwargs):
    try:
        make(front, kwargs)
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return [type(e).__name__, str(e)]
    return ["ok", ""]


def load_ours(item, inputs, arrays):
    """Load a checkpoint dict written by our fronts (to_mindspore_state_dict)
    into a MindSpore layer (bare or in a net) strictly, then run inference."""
    layer = make(item["front"], item["kwargs"])
    net = Wrapped(layer) if item["in_net"] else layer
    prefix = item["prefix"]
    saved = {k[len(prefix):]: ms.Parameter(Tensor(v), name=k[len(prefix):]) for k, v in inputs.items()
             if k.startswith(prefix)}
    not_loaded, unused = ms.load_param_into_net(net, saved, strict_load=True)
    net.set_train(False)
    arrays[item["id"] + "/y"] = net(Tensor(inputs[item["x"]])).asnumpy()
    return {"keys": sorted(saved), "not_loaded": list(not_loaded), "unused": list(unused)}


def main():
    spec_path, inputs_path, out_dir = sys.argv[1:4]
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    with open(spec_path) as f:
        spec = json.load(f)
    inputs = dict(np.load(inputs_path))
    arrays, report = {}, {"version": ms.__version__, "names": {}, "errors": {}, "load": {}, "checkpoints": {}}
    report["case_errors"] = {}
    for case in spec["cases"]:
        try:
            run_case(case, inputs, arrays)
        except Exception as e:  # noqa: BLE001 - reported, the test decides
            report["case_errors"][case["id"]] = [type(e).__name__, str(e)]
    for key, (front, kwargs) in spec["names"].items():
        report["names"][key] = names(front, kwargs)
    for key, (front, kwargs) in spec["errors"].items():
        report["errors"][key] = error_of(front, kwargs)
    for item in spec["load"]:
        report["load"][item["id"]] = load_ours(item, inputs, arrays)
    for item in spec["checkpoints"]:
        # A trained MindSpore layer (bare or in a net), saved with save_checkpoint and read back:
        # the dict a MindSpore user hands to from_mindspore_state_dict.
        layer = make(item["front"], item["kwargs"])
        net = Wrapped(layer) if item["in_net"] else layer
        net.set_train(True)
        net(Tensor(inputs[item["x"]]))
        path = f"{out_dir}/{item['id']}.ckpt"
        ms.save_checkpoint(net, path)
        loaded = ms.load_checkpoint(path)
        report["checkpoints"][item["id"]] = sorted(loaded)
        for k, v in loaded.items():
            arrays[f"{item['id']}/ckpt/{k}"] = v.asnumpy().copy()
        net.set_train(False)
        arrays[f"{item['id']}/eval_y"] = net(Tensor(inputs[item["eval_x"]])).asnumpy()
    np.savez(f"{out_dir}/out.npz", **arrays)
    with open(f"{out_dir}/out.json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
