"""Communication helpers: backend choice, env parsing, named groups."""
import os

import pytest
import torch

import npu_syncbn
from npu_syncbn import comm


def test_default_backend_is_gloo_on_a_cpu_machine(monkeypatch):
    monkeypatch.delenv(comm.ENV_BACKEND, raising=False)
    if comm.npu_available() or torch.cuda.is_available():
        pytest.skip("this machine has an accelerator; the CPU default cannot be observed")
    assert comm.default_backend() == "gloo"
    monkeypatch.setenv(comm.ENV_BACKEND, "hccl")
    assert comm.default_backend() == "hccl"


def test_not_distributed_means_rank_0_of_1(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("DEVICE_ID", raising=False)
    assert npu_syncbn.get_rank() == 0 and npu_syncbn.get_group_size() == 1 and npu_syncbn.get_local_rank() == 0
    monkeypatch.setenv("DEVICE_ID", "3")
    assert npu_syncbn.get_local_rank() == 3


def test_init_names_missing_environment(monkeypatch):
    for name in ("RANK", "RANK_ID", "WORLD_SIZE", "RANK_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="RANK or RANK_ID"):
        npu_syncbn.init()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        npu_syncbn.init()


def test_timeout_env_is_validated(monkeypatch):
    monkeypatch.setenv(comm.ENV_TIMEOUT, "soon")
    with pytest.raises(ValueError, match="NPU_SYNCBN_TIMEOUT"):
        comm.default_timeout()
    monkeypatch.setenv(comm.ENV_TIMEOUT, "12.5")
    assert comm.default_timeout().total_seconds() == 12.5


def test_unknown_group_name_is_a_clear_error():
    with pytest.raises(ValueError, match="not a group made with create_group"):
        comm.resolve_group("nope")


def _group_queries(rank, world_size):
    out = {}
    npu_syncbn.create_group("evens", [r for r in range(world_size) if r % 2 == 0])
    try:
        if rank % 2 == 0:
            out["size"] = npu_syncbn.get_group_size("evens")
            out["rank"] = npu_syncbn.get_rank("evens")
        else:
            with pytest.raises(ValueError, match="not a member"):
                npu_syncbn.SyncBatchNorm(2, process_group="evens")(torch.randn(3, 2))
        for bad, exc, match in (
            ([0, world_size], ValueError, r"not in range \[0, %d\)" % world_size),
            ([0, 0], ValueError, "twice"),
            ([], ValueError, "at least one"),
            (["0"], TypeError, "int rank ids"),
        ):
            with pytest.raises(exc, match=match):
                npu_syncbn.create_group(f"bad{rank}", bad)
        with pytest.raises(ValueError, match="exists already"):
            npu_syncbn.create_group("evens", [0])
        out["world"] = (npu_syncbn.get_rank(), npu_syncbn.get_group_size())
    finally:
        npu_syncbn.destroy_group("evens")
    with pytest.raises(ValueError, match="no group named"):
        npu_syncbn.destroy_group("evens")
    return out


def test_named_groups_in_a_world_of_four(ranks):
    out = ranks(4).run(_group_queries)
    assert [o["world"] for o in out] == [(r, 4) for r in range(4)]
    assert (out[0]["size"], out[0]["rank"]) == (2, 0)
    assert (out[2]["size"], out[2]["rank"]) == (2, 1)


def _recreate_same_name(rank, world_size, times):
    sums = []
    for _ in range(times):
        npu_syncbn.create_group("again", list(range(world_size)))
        try:
            t = torch.ones(1) * (rank + 1)
            torch.distributed.all_reduce(t, group=npu_syncbn.comm.resolve_group("again"))
            sums.append(float(t))
        finally:
            npu_syncbn.destroy_group("again")
    return sums


def test_a_group_name_can_be_made_again_after_destroy(ranks):
    """The store keeps a destroyed group's keys: a re-created group must not read them."""
    for rank, sums in enumerate(ranks(2).run(_recreate_same_name, 15)):
        assert sums == [3.0] * 15, f"rank {rank}: {sums}"
