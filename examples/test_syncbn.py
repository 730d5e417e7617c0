"""The ``mindspore.mint.nn.SyncBatchNorm`` documentation example, on npu_syncbn
and torch, as a pytest file to run on every worker of a 2-process job:

    npu-syncbn-run --worker_num=2 --local_worker_num=2 --master_port=8975 --log_dir=msrun_log \
        --join=True --cluster_time_out=100 pytest -s -v examples/test_syncbn.py

(MindSpore runs the same file with ``msrun`` and the same flags.) Works on CPU
(gloo) and on Ascend NPUs (HCCL). Besides the documented inference call it
checks a training step against BatchNorm on the batch of both ranks together.
It is not collected by ``pytest tests``.
"""
import os

import pytest
import torch
import torch.distributed as dist

# The documented example, with its imports changed:
#   mindspore.communication.init/create_group -> npu_syncbn.init/create_group
#   mindspore.mint.nn.layer.SyncBatchNorm     -> npu_syncbn.mint.SyncBatchNorm
#   Tensor(np.linspace(...), mindspore.float32) -> torch.linspace(...)
from npu_syncbn import create_group, get_local_rank, init  # noqa: F401  (get_local_rank: as in the example)
from npu_syncbn.mint import SyncBatchNorm

if "RANK" not in os.environ and "RANK_ID" not in os.environ:
    pytest.skip("run this file under a launcher: npu-syncbn-run --worker_num=2 ... pytest examples/test_syncbn.py",
                allow_module_level=True)

EPS = 1e-5


@pytest.fixture(scope="module")
def group():
    init()
    group = "0-1"
    rank_ids = [0, 1]
    create_group(group, rank_ids)
    yield group
    dist.barrier()
    dist.destroy_process_group()


def _device():
    # On an Ascend machine (hccl) run on this worker's NPU; on CPU (gloo) stay on CPU.
    return torch.device("npu") if dist.get_backend() == "hccl" else torch.device("cpu")


def test_seed_example_inference(group):
    sync_batch_norm = SyncBatchNorm(num_features=2, process_group=group, dtype=torch.float32).to(_device())
    sync_batch_norm.set_train(False)
    input_x = torch.linspace(0, 5, 2 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2, 2).to(_device())
    output_data = sync_batch_norm(input_x)

    # Fresh moving statistics (mean 0, variance 1), gamma 1, beta 0: y = (x - 0) / sqrt(1 + eps).
    expected = (input_x - 0) / torch.sqrt(torch.tensor(1 + EPS))
    assert output_data.shape == (2, 2, 2, 2) and output_data.dtype == torch.float32
    torch.testing.assert_close(output_data.cpu(), expected.cpu(), rtol=1e-6, atol=1e-6)
    print(f"rank {dist.get_rank()} inference output:\n{output_data.cpu()}")


def test_training_step_uses_global_statistics(group):
    rank, world = dist.get_rank(), dist.get_world_size()
    sync_batch_norm = SyncBatchNorm(num_features=2, process_group=group, dtype=torch.float32).to(_device())
    sync_batch_norm.set_train(True)

    # Each rank feeds a different shard.
    input_x = torch.linspace(0, 5, 2 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2, 2) * (rank + 1) + 3 * rank
    x = input_x.to(_device()).requires_grad_(True)
    y = sync_batch_norm(x)
    grad_y = torch.linspace(-1, 1, 16).reshape(2, 2, 2, 2) * (rank - 0.5)
    y.backward(grad_y.to(_device()))

    # Reference: BatchNorm2d in float64 on the concatenated batch of both ranks.
    # (gathered on the device: HCCL takes device tensors only)
    shards = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(shards, x.detach())
    grads = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(grads, grad_y.to(_device()))
    X = torch.cat(shards).cpu().double().requires_grad_(True)
    ref = torch.nn.BatchNorm2d(2, eps=EPS, momentum=0.1).double()
    Y = ref(X)
    Y.backward(torch.cat(grads).cpu().double())
    mine = slice(2 * rank, 2 * rank + 2)

    torch.testing.assert_close(y.detach().cpu().double(), Y.detach()[mine], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.cpu().double(), X.grad[mine], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sync_batch_norm.running_mean.cpu().double(), ref.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sync_batch_norm.running_var.cpu().double(), ref.running_var, rtol=1e-5, atol=1e-6)
    assert int(sync_batch_norm.num_batches_tracked) == 1

    # The statistics are the global ones, not this rank's: rank 1's shard alone has another mean.
    local_mean = input_x.double().mean(dim=(0, 2, 3))
    assert not torch.allclose(local_mean * 0.1, sync_batch_norm.running_mean.cpu().double(), atol=1e-3)

    # Back in inference mode the layer normalizes with the updated running statistics.
    sync_batch_norm.set_train(False)
    z = sync_batch_norm(x.detach())
    ref.eval()
    torch.testing.assert_close(z.cpu().double(), ref(X.detach())[mine], rtol=1e-5, atol=1e-5)
    print(f"SEED-EXAMPLE-TRAINING-OK rank {rank}")
    print(f"SEED-EXAMPLE-DEVICE {y.device} backend {dist.get_backend()}")
