"""The shared-memory channel (npu_syncbn/shm.py) that carries SyncBatchNorm's
small CPU collectives between ranks of one host, against gloo's collectives."""
import os

import pytest
import torch

import shm_scenarios as sc
from npu_syncbn import shm
from npu_syncbn.ops import cpu_fast

pytestmark = pytest.mark.skipif(
    cpu_fast.library_any() is None or not os.path.isdir(shm.SHM_DIR),
    reason="needs the CPU kernel library (g++) and /dev/shm",
)


@pytest.mark.parametrize("world_size", [2, 4])
def test_collectives_match_gloo_and_agree_across_ranks(ranks, world_size):
    out = ranks(world_size).run(sc.collectives_match_gloo)
    for rank, res in enumerate(out):
        assert res["channel"], f"rank {rank}: no shared-memory channel although forced"
        assert all(res["gather_equal"].values()), f"rank {rank}: all_gather differs from gloo: {res['gather_equal']}"
    for dtype in out[0]["sums"]:
        # Every rank reduces in rank order: the same bits everywhere.
        for rank, res in enumerate(out[1:], start=1):
            assert torch.equal(res["sums"][dtype], out[0]["sums"][dtype]), f"{dtype}: rank {rank} got other bits"
        dt = getattr(torch, dtype.replace("torch.", ""))
        exact = sum(sc._payload(r, dt).double() for r in range(world_size))  # each rank's values as sent
        got, gloo = out[0]["sums"][dtype].double(), out[0]["gloo_sums"][dtype].double()
        tol = {torch.bfloat16: 3e-2, torch.float32: 1e-6}.get(dt, 1e-12) * float(exact.abs().max())
        torch.testing.assert_close(got, exact, rtol=0, atol=tol)
        torch.testing.assert_close(got, gloo, rtol=0, atol=tol)


def test_syncbn_step_goes_through_shared_memory(ranks):
    """First step: fingerprint check + statistics + gradient sums; later steps two."""
    for rank, res in enumerate(ranks(2).run(sc.syncbn_steps_use_shm)):
        assert res["per_step"] == [3, 2], f"rank {rank}: channel collectives per step {res['per_step']}"
        assert res["close"], f"rank {rank}: output differs from BatchNorm on the global batch"


@pytest.mark.parametrize("name, expected", [("shm", True), ("gloo", False)])
def test_transport_setting(ranks, name, expected):
    assert ranks(2).run(sc.transport_in_use, name) == [expected, expected]


def test_auto_uses_shared_memory_only_without_oversubscription(monkeypatch):
    monkeypatch.delenv(shm.ENV, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores = os.cpu_count() or 1
    assert shm.wanted(max(2, cores)) == (cores >= 2)
    assert not shm.wanted(cores + 1)  # waiting ranks spin: more ranks than cores would starve the others
    assert not shm.wanted(1)
    # A group of 2 in a job with more processes on this host than cores: gloo.
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores + 1))
    assert not shm.wanted(2)
    monkeypatch.setenv(shm.ENV, "shm")
    assert shm.wanted(cores + 1)
    monkeypatch.setenv(shm.ENV, "gloo")
    assert not shm.wanted(2)
    monkeypatch.setenv(shm.ENV, "fast")
    with pytest.raises(ValueError, match="NPU_SYNCBN_CPU_TRANSPORT must be one of auto, shm, gloo"):
        shm.wanted(2)


def test_different_sizes_raise_on_every_rank_and_stay_in_step(ranks):
    for rank, res in enumerate(ranks(2).run(sc.sizes_differ)):
        assert res["msg"] is not None, f"rank {rank} read buffers of different sizes"
        assert "different buffer sizes" in res["msg"] and "rank 0: 20 bytes" in res["msg"] and "rank 1: 28 bytes" in res["msg"]
        assert res["healthy"], f"rank {rank}: the channel fell out of step after the error"


def test_payload_beyond_a_slot_goes_through_gloo(ranks):
    for rank, res in enumerate(ranks(2).run(sc.too_large_uses_gloo)):
        assert res["correct"] and res["small_ok"], f"rank {rank}: {res}"
        assert res["exchanges"] == 2, "the size went through the channel, the data through gloo"


def test_missing_peer_raises_within_the_timeout(ranks):
    res = ranks(2).run(sc.peer_missing_times_out, 2.0)[0]
    assert res["msg"] is not None and "rank 1 of the group did not arrive within 2 s" in res["msg"], res
    assert 1.5 < res["elapsed"] < 10.0, f"gave up after {res['elapsed']:.1f} s (timeout 2 s)"


def test_no_file_left_in_dev_shm(ranks):
    assert ranks(2).run(sc.nothing_left_in_dev_shm) == [0, 0]


def test_wait_time_is_the_late_peers_delay(ranks):
    """npu-syncbn-bench splits a step's time with it: the rendezvous wait is the
    peer's lateness (here 0.3 s), not counted on the late rank."""
    out = ranks(2).run(sc.wait_time_counts_a_late_peer)
    assert all(res["channel"] for res in out), "no shared-memory channel although forced"
    assert 0.25 <= out[0]["waited"] < 5, f"rank 0 waited {out[0]['waited']:.3f} s for a peer 0.3 s late"
    assert out[1]["waited"] < 0.25, f"the late rank itself waited {out[1]['waited']:.3f} s"
