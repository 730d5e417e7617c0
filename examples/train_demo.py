"""2-rank training demo of npu_syncbn.SyncBatchNorm: on CPU (gloo), on Ascend
NPUs (device "npu", backend "hccl") or on the emulated NPU (the same NPU path,
``npu-syncbn-run --emulate_npu`` / ``bash ci/run_demo.sh --emulate-npu``).

Trains a small conv net with SyncBatchNorm under DistributedDataParallel on
synthetic images for a few steps, each rank seeing half of every global batch.
Rank 0 also trains an identical single-process copy with plain BatchNorm2d on
the whole global batch; with synchronized statistics both runs must follow
the same trajectory, so the demo prints the loss per step and, at the end, the
largest difference in outputs and parameters between the two.

Run it through the launcher (what the README does):
    npu-syncbn-run --worker_num=2 --local_worker_num=2 --master_port=29517 \
        --log_dir=demo_log --join=True examples/train_demo.py
or directly, in which case it starts its own 2 processes:
    python examples/train_demo.py [--steps 20]
The script is the same everywhere: it trains on "npu" when init() chose "hccl".
"""
from __future__ import annotations

import argparse
import copy
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

import npu_syncbn

GLOBAL_BATCH, CLASSES, SIZE = 16, 4, 12


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, CLASSES),
    )


def global_batch(step: int):
    """Synthetic images whose class shifts the mean of one colour channel."""
    g = torch.Generator().manual_seed(1000 + step)
    labels = torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=g)
    images = torch.randn(GLOBAL_BATCH, 3, SIZE, SIZE, generator=g)
    images[torch.arange(GLOBAL_BATCH), labels % 3] += 1.0 + labels.float().view(-1, 1, 1) / 2
    return images, labels


def train(steps: int) -> int:
    npu_syncbn.init()  # hccl with an NPU (or the emulated one), else gloo
    rank, world = npu_syncbn.get_rank(), npu_syncbn.get_group_size()
    torch.set_num_threads(1)
    local_batch = GLOBAL_BATCH // world
    # init() made this rank's NPU (LOCAL_RANK) current under hccl
    device = torch.device("npu", torch.npu.current_device()) if dist.get_backend() == "hccl" else torch.device("cpu")
    if rank == 0:
        print(f"route: backend {dist.get_backend()}, device {device}, npu_syncbn op route "
              f"{npu_syncbn.ops.npu.ROUTE if device.type == 'npu' else 'cpu'}", flush=True)

    reference = make_net()  # plain BatchNorm2d, global batch, one process, on CPU
    model = nn.parallel.DistributedDataParallel(npu_syncbn.convert_sync_batchnorm(make_net()).to(device))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    for step in range(steps):
        images, labels = global_batch(step)
        shard = slice(rank * local_batch, (rank + 1) * local_batch)
        loss = loss_fn(model(images[shard].to(device)), labels[shard].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()

        ref_loss = loss_fn(reference(images), labels)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()

        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        if rank == 0:
            print(f"step {step:3d}  loss {float(mean_loss) / world:.4f}  (single-process BatchNorm: {ref_loss.item():.4f})", flush=True)

    images, _ = global_batch(steps)
    model.eval(), reference.eval()
    with torch.no_grad():
        out_diff = float((model(images.to(device)).cpu() - reference(images)).abs().max())
    param_diff = max(float((p.cpu() - q).abs().max()) for p, q in zip(model.module.state_dict().values(), reference.state_dict().values()))
    if rank == 0:
        print(f"largest difference from single-process BatchNorm on the global batch: "
              f"outputs {out_diff:.2e}, parameters and running stats {param_diff:.2e}")
        ok = out_diff < 1e-3 and param_diff < 1e-3
        print("RESULT:", "OK, synchronized BatchNorm matches" if ok else "MISMATCH")
    dist.destroy_process_group()
    return 0 if out_diff < 1e-3 and param_diff < 1e-3 else 1


def _spawned(rank: int, world: int, port: int, steps: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = train(steps)
    if code:
        sys.exit(code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    args = parser.parse_args()
    if "RANK" in os.environ or "RANK_ID" in os.environ:  # started by a launcher
        return train(args.steps)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_spawned, args=(2, port, args.steps), nprocs=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
