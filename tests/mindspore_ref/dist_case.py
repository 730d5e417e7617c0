"""One 2-worker scenario run under both launchers, for tests/test_mindspore_parity.py:

    msrun          ... dist_case.py mindspore OUT_DIR   (in the MindSpore venv)
    npu-syncbn-run ... dist_case.py ours OUT_DIR        (in the torch venv)

Every worker builds the same global batches from a seed and keeps its own rows.
"ours": npu_syncbn's MindSpore fronts (nn- and mint-shaped) synchronize the
statistics over the two ranks. "mindspore": MindSpore's synchronized BatchNorm
runs on Ascend only, so each worker all-gathers the shards (a real collective)
and runs MindSpore's BatchNorm on the combined batch, keeping its own rows of
the output and input gradient. Each worker writes OUT_DIR/<backend>_rank<r>.npz
with, per layer and step: output rows, input-gradient rows, the summed
parameter gradients and the moving statistics.
"""
import os
import sys

import numpy as np

C = 3
ROWS = 4            # per rank (equal shards: AllGather needs equal shapes)
STEPS = ("train", "train", "eval")
# (name, front, inner dims, front kwargs: momentum in the front's own convention)
LAYERS = (
    ("nn4d", "nn", (3, 2), {"momentum": 0.7}),
    ("nn2d", "nn", (), {"momentum": 0.9}),
    ("mint4d", "mint", (3, 2), {"momentum": 0.2}),
    ("mint3d", "mint", (5,), {"momentum": None}),
)


def batches(inner, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in STEPS:
        shape = (2 * ROWS, C) + tuple(inner)
        out.append(((rng.standard_normal(shape) * 2 + 1).astype(np.float32), rng.standard_normal(shape).astype(np.float32)))
    return out


def params_init(seed):
    rng = np.random.default_rng(seed + 1000)
    return rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)


def run_mindspore(out_dir):
    import mindspore as ms
    from mindspore import Tensor, mint, nn, ops
    from mindspore.communication import get_rank, init

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    init()
    rank = get_rank()
    # mint.nn.BatchNorm{1,2}d has no CPU kernel; mint.nn.SyncBatchNorm runs
    # MindSpore's local batch norm (cumulative average for momentum=None
    # included) when its world is one process: made so here (its attribute
    # world_size, read at each call), it is BatchNorm on the combined batch.
    mint_layers = {}
    for name, front, _, kwargs in LAYERS:
        if front == "mint":
            mint_layers[name] = mint.nn.SyncBatchNorm(C, **kwargs)
            mint_layers[name].world_size = 1
    gather = ops.AllGather()
    rows = slice(rank * ROWS, (rank + 1) * ROWS)
    result = {}
    for li, (name, front, inner, kwargs) in enumerate(LAYERS):
        dims = len(inner) + 2
        if front == "nn":
            cls = nn.BatchNorm2d if dims == 4 else nn.BatchNorm1d
            layer = cls(C, **kwargs)
            w, b = layer.gamma, layer.beta
        else:
            layer = mint_layers[name]
            w, b = layer.weight, layer.bias
        gamma, beta = params_init(li)
        w.set_data(Tensor(gamma))
        b.set_data(Tensor(beta))
        weights = layer.trainable_params()
        for step, (mode, (X, G)) in enumerate(zip(STEPS, batches(inner, li))):
            layer.set_train(mode == "train")
            combined = gather(Tensor(X[rows]))  # the shards of both ranks, in rank order
            g = Tensor(G)

            def loss(x_, g_):
                y_ = layer(x_)
                return (y_ * g_).sum(), y_

            (_, y), (dx, dw) = ms.value_and_grad(loss, grad_position=0, weights=weights, has_aux=True)(combined, g)
            key = f"{name}/{step}/"
            result[key + "y"] = y.asnumpy()[rows]
            result[key + "dx"] = dx.asnumpy()[rows]
            result[key + "dweight"], result[key + "dbias"] = dw[0].asnumpy(), dw[1].asnumpy()
            stats = (layer.moving_mean, layer.moving_variance) if front == "nn" else (layer.running_mean, layer.running_var)
            result[key + "mean"], result[key + "var"] = stats[0].asnumpy(), stats[1].asnumpy()
    np.savez(os.path.join(out_dir, f"mindspore_rank{rank}.npz"), **result)


def run_ours(out_dir):
    import torch
    import torch.distributed as dist

    import npu_syncbn
    from npu_syncbn import mindspore as ms_front
    from npu_syncbn import mint

    npu_syncbn.init()
    rank = dist.get_rank()
    rows = slice(rank * ROWS, (rank + 1) * ROWS)
    result = {}
    for li, (name, front, inner, kwargs) in enumerate(LAYERS):
        layer = ms_front.SyncBatchNorm(C, **kwargs) if front == "nn" else mint.SyncBatchNorm(C, **kwargs)
        gamma, beta = params_init(li)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(gamma))
            layer.bias.copy_(torch.from_numpy(beta))
        for step, (mode, (X, G)) in enumerate(zip(STEPS, batches(inner, li))):
            layer.set_train(mode == "train")
            x = torch.from_numpy(X[rows]).requires_grad_(True)
            y = layer(x)
            (y * torch.from_numpy(G[rows])).sum().backward()
            grads = [layer.weight.grad.clone(), layer.bias.grad.clone()]
            for t in grads:
                dist.all_reduce(t)  # DDP's sum: each rank holds its share
            layer.weight.grad = layer.bias.grad = None
            key = f"{name}/{step}/"
            result[key + "y"], result[key + "dx"] = y.detach().numpy(), x.grad.numpy()
            result[key + "dweight"], result[key + "dbias"] = grads[0].numpy(), grads[1].numpy()
            result[key + "mean"], result[key + "var"] = layer.running_mean.numpy(), layer.running_var.numpy()
    np.savez(os.path.join(out_dir, f"ours_rank{rank}.npz"), **result)
    dist.barrier()  # both ranks done with the collectives before either tears the group down
    dist.destroy_process_group()


if __name__ == "__main__":
    backend, out = sys.argv[1], sys.argv[2]
    {"mindspore": run_mindspore, "ours": run_ours}[backend](out)
