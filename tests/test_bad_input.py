"""Bad input to every public entry fails with a clear error that names the
argument and the expected form; NaN/Inf and strided inputs behave like local
BatchNorm on the global batch (2 gloo ranks, both sync modes)."""
import pytest
import torch

import npu_syncbn
import reliability_scenarios as sc

OPS = torch.ops.npu_syncbn
X = torch.randn(4, 3, 5)
M, V = torch.zeros(3), torch.ones(3)
W2 = torch.zeros(2, 3)
C2 = torch.tensor([5.0, 5.0])


# ----------------------------------------------------------------- the five ops

OP_CASES = {
    # batch_norm_stats
    "stats 1-D input": (lambda: OPS.batch_norm_stats(torch.randn(5), 1e-5), ValueError, r"input must have shape \(N, C, \*\)"),
    "stats int64 input": (lambda: OPS.batch_norm_stats(X.long(), 1e-5), TypeError, "input must be float64, float32, float16 or bfloat16, got torch.int64"),
    "stats bool input": (lambda: OPS.batch_norm_stats(X > 0, 1e-5), TypeError, "input must be float64"),
    "stats eps 0": (lambda: OPS.batch_norm_stats(X, 0.0), ValueError, "eps must be a finite float > 0, got 0.0"),
    "stats eps < 0": (lambda: OPS.batch_norm_stats(X, -1e-5), ValueError, "eps must be a finite float > 0"),
    "stats eps inf": (lambda: OPS.batch_norm_stats(X, float("inf")), ValueError, "eps must be a finite float > 0"),
    "stats eps nan": (lambda: OPS.batch_norm_stats(X, float("nan")), ValueError, "eps must be a finite float > 0"),
    # batch_norm_gather_stats_with_counts
    "gather 1-D mean": (lambda: OPS.batch_norm_gather_stats_with_counts(X, M, V, None, None, 0.1, 1e-5, C2), ValueError, r"mean must have shape \(world_size, C\)"),
    "gather invstd shape": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, torch.ones(3, 3), None, None, 0.1, 1e-5, C2), ValueError, "mean and invstd must have the same shape"),
    "gather C differs from input": (lambda: OPS.batch_norm_gather_stats_with_counts(X, torch.zeros(2, 4), torch.ones(2, 4), None, None, 0.1, 1e-5, C2), ValueError, r"mean must have shape \(world_size, 3\)"),
    "gather counts length": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, W2 + 1, None, None, 0.1, 1e-5, torch.ones(3)), ValueError, r"counts must have one entry per row of mean \(2\)"),
    "gather counts 2-D": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, W2 + 1, None, None, 0.1, 1e-5, torch.ones(2, 1)), ValueError, "counts must be a 1-D tensor"),
    "gather momentum > 1": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, W2 + 1, None, None, 1.5, 1e-5, C2), ValueError, r"momentum must be a float in \[0, 1\], got 1.5"),
    "gather momentum < 0": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, W2 + 1, None, None, -0.1, 1e-5, C2), ValueError, "momentum must be a float in"),
    "gather momentum nan": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, W2 + 1, None, None, float("nan"), 1e-5, C2), ValueError, "momentum must be a float in"),
    "gather eps 0": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, W2 + 1, None, None, 0.1, 0.0, C2), ValueError, "eps must be a finite float > 0"),
    "gather running_mean size": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, W2 + 1, torch.zeros(4), None, 0.1, 1e-5, C2), ValueError, r"running_mean must have shape \(3,\)"),
    "gather running_var size": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, W2 + 1, None, torch.ones(2), 0.1, 1e-5, C2), ValueError, r"running_var must have shape \(3,\)"),
    "gather running_var int": (lambda: OPS.batch_norm_gather_stats_with_counts(X, W2, W2 + 1, None, torch.ones(3, dtype=torch.int64), 0.1, 1e-5, C2), TypeError, "running_var must be a float tensor"),
    "gather int64 input": (lambda: OPS.batch_norm_gather_stats_with_counts(X.long(), W2, W2 + 1, None, None, 0.1, 1e-5, C2), TypeError, "input must be float64"),
    # batch_norm_elemt
    "elemt weight size": (lambda: OPS.batch_norm_elemt(X, torch.ones(2), None, M, V, 1e-5), ValueError, r"weight must have shape \(3,\)"),
    "elemt bias size": (lambda: OPS.batch_norm_elemt(X, None, torch.ones(4), M, V, 1e-5), ValueError, r"bias must have shape \(3,\)"),
    "elemt weight 2-D": (lambda: OPS.batch_norm_elemt(X, torch.ones(1, 3), None, M, V, 1e-5), ValueError, r"weight must have shape \(3,\)"),
    "elemt mean size": (lambda: OPS.batch_norm_elemt(X, None, None, torch.zeros(2), V, 1e-5), ValueError, r"mean must have shape \(3,\)"),
    "elemt invstd size": (lambda: OPS.batch_norm_elemt(X, None, None, M, torch.ones(5), 1e-5), ValueError, r"invstd must have shape \(3,\)"),
    "elemt int weight": (lambda: OPS.batch_norm_elemt(X, torch.ones(3, dtype=torch.int32), None, M, V, 1e-5), TypeError, "weight must be a float tensor"),
    "elemt int64 input": (lambda: OPS.batch_norm_elemt(X.long(), None, None, M, V, 1e-5), TypeError, "input must be float64"),
    "elemt 1-D input": (lambda: OPS.batch_norm_elemt(torch.randn(3), None, None, M, V, 1e-5), ValueError, r"\(N, C, \*\)"),
    # batch_norm_backward_reduce
    "reduce grad_out shape": (lambda: OPS.batch_norm_backward_reduce(torch.randn(4, 2), X, M, V, None, True, True, True), ValueError, r"grad_out must have the input's shape \(4, 3, 5\)"),
    "reduce weight size": (lambda: OPS.batch_norm_backward_reduce(X, X, M, V, torch.ones(4), True, True, True), ValueError, r"weight must have shape \(3,\)"),
    "reduce mean size": (lambda: OPS.batch_norm_backward_reduce(X, X, torch.zeros(2), V, None, True, True, True), ValueError, r"mean must have shape \(3,\)"),
    "reduce int64 input": (lambda: OPS.batch_norm_backward_reduce(X, X.long(), M, V, None, True, True, True), TypeError, "input must be float64"),
    # batch_norm_backward_elemt
    "belemt grad_out shape": (lambda: OPS.batch_norm_backward_elemt(X[:2], X, M, V, None, M, M, C2), ValueError, "grad_out must have the input's shape"),
    "belemt sum_dy size": (lambda: OPS.batch_norm_backward_elemt(X, X, M, V, None, torch.zeros(4), M, C2), ValueError, r"sum_dy must have shape \(3,\)"),
    "belemt sum_dy_xmu size": (lambda: OPS.batch_norm_backward_elemt(X, X, M, V, None, M, torch.zeros(2), C2), ValueError, r"sum_dy_xmu must have shape \(3,\)"),
    "belemt weight size": (lambda: OPS.batch_norm_backward_elemt(X, X, M, V, torch.ones(2), M, M, C2), ValueError, r"weight must have shape \(3,\)"),
    "belemt count 0-D": (lambda: OPS.batch_norm_backward_elemt(X, X, M, V, None, M, M, torch.tensor(5.0)), ValueError, "counts must be a 1-D tensor"),
    "belemt int64 input": (lambda: OPS.batch_norm_backward_elemt(X.long(), X.long(), M, V, None, M, M, C2), TypeError, "input must be float64"),
}


@pytest.mark.parametrize("case", list(OP_CASES))
def test_ops_name_the_bad_argument(case):
    call, exc, match = OP_CASES[case]
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------- the module

MODULE_CASES = {
    "1-D input": (lambda m: m(torch.randn(4)), ValueError, r"expected input of shape \(N, 4, \*\) with at least 2 dims, got shape \(4,\)"),
    "wrong C": (lambda m: m(torch.randn(2, 3, 5)), ValueError, r"expected input of shape \(N, 4, \*\) .*got shape \(2, 3, 5\)"),
    "not a tensor": (lambda m: m([[1.0] * 4]), TypeError, r"input must be a torch.Tensor of shape \(N, 4, \*\), got list"),
}


@pytest.mark.parametrize("case", list(MODULE_CASES))
def test_module_names_bad_input(case):
    call, exc, match = MODULE_CASES[case]
    with pytest.raises(exc, match=match):
        call(npu_syncbn.SyncBatchNorm(4))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_module_rejects_non_float_input(dtype):
    with pytest.raises(TypeError, match=r"input must be a float tensor .*\(N, 4, \*\).*got torch\."):
        npu_syncbn.SyncBatchNorm(4)(torch.ones(2, 4, 3).to(dtype))


def test_module_rejects_input_on_other_device_than_parameters():
    with pytest.raises(ValueError, match="input is on meta but .*parameters.* on cpu"):
        npu_syncbn.SyncBatchNorm(4)(torch.ones(2, 4, 3, device="meta"))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"eps": 0.0}, ValueError, "eps must be a finite float > 0, got 0.0"),
        ({"eps": -1e-3}, ValueError, "eps must be a finite float > 0"),
        ({"eps": float("nan")}, ValueError, "eps must be a finite float > 0"),
        ({"eps": 1}, TypeError, "eps must be a float"),
        ({"momentum": 1.5}, ValueError, r"momentum must be in range \[0, 1\], got 1.5"),
        ({"momentum": -0.1}, ValueError, r"momentum must be in range \[0, 1\]"),
        ({"momentum": "0.1"}, TypeError, "momentum must be a float in"),
        ({"num_features": 0}, ValueError, "num_features must be >= 1"),
        ({"num_features": 4.0}, TypeError, "num_features must be an int"),
        ({"sync_mode": "ring"}, ValueError, "sync_mode must be one of auto, allgather, allreduce"),
        ({"process_group": 3}, TypeError, "process_group must be None, a torch.distributed.ProcessGroup, GroupMember.NON_GROUP_MEMBER or a str"),
        ({"layer_name": 5}, TypeError, "layer_name must be a str"),
    ],
)
def test_module_constructor_names_bad_argument(kwargs, exc, match):
    args = {"num_features": 4, **kwargs}
    with pytest.raises(exc, match=match):
        npu_syncbn.SyncBatchNorm(**args)


def test_unknown_group_name_lists_known_groups():
    with pytest.raises(ValueError, match="process_group 'nope' is not a group made with create_group"):
        npu_syncbn.get_group_size("nope")
    with pytest.raises(ValueError, match="no group named 'nope'"):
        npu_syncbn.destroy_group("nope")
    with pytest.raises(RuntimeError, match="create_group needs an initialised process group"):
        npu_syncbn.create_group("g", [0])


def test_bad_input_on_a_group_fails_alike_on_every_rank(ranks):
    for rank, msgs in enumerate(ranks(2).run(sc.bad_input_on_group, ["C=5", "1-D"])):
        c_msg, rank_msg, healthy = msgs
        assert c_msg.startswith("ValueError") and "(N, 4, *)" in c_msg and "(3, 5, 2)" in c_msg, c_msg
        assert rank_msg.startswith("ValueError") and "at least 2 dims" in rank_msg, rank_msg
        assert healthy == "healthy", f"rank {rank}: ranks out of step after bad input"


def test_int_input_on_a_group_names_the_dtype(ranks):
    for rank, (msg, healthy) in enumerate(ranks(2).run(sc.bad_input_on_group, ["int64"])):
        assert msg.startswith("TypeError") and "float" in msg and "torch.int64" in msg, msg
        assert healthy == "healthy"


def test_named_group_helpers_name_bad_arguments(ranks):
    expected = [
        "TypeError: name must be a non-empty str",
        "TypeError: name must be a non-empty str, got 5",
        "ValueError: rank_ids must name at least one rank",
        "ValueError: rank_ids names a rank twice: [0, 0]",
        "ValueError: rank id 2 in rank_ids is not in range [0, 2)",
        "TypeError: rank_ids must be a list of int rank ids, got str",
        "TypeError: rank_ids must hold int rank ids, got 0.0 (float)",
        "TypeError: rank_ids must hold int rank ids, got True (bool)",
        "ValueError: a group named 'pair' exists already (ranks [0, 1])",
        "ValueError: no group named 'pair'",
        "ValueError: process_group 'nope' is not a group made with create_group",
        "ValueError: process_group 'nope' is not a group made with create_group",
        "TypeError: process_group must be None, a torch.distributed.ProcessGroup or a str made with create_group, got int",
    ]
    out = ranks(2).run(sc.named_group_errors)
    for rank, msgs in enumerate(out):
        for got, want in zip(msgs, expected):
            assert got.startswith(want), f"rank {rank}: {got!r} does not start with {want!r}"
        assert len(msgs) == len(expected) + 1
    assert out[0][-1] == "member rank 0"
    assert out[1][-1].startswith("ValueError: this rank (1) is not a member of process_group 'only0' (ranks [0])")


# ----------------------------------------------------------------- layouts, NaN and Inf on 2 ranks

@pytest.mark.parametrize("mode", ["allgather", "allreduce"])
@pytest.mark.parametrize("layout", ["permuted", "sliced", "channels_last"])
def test_strided_inputs_match_global_batchnorm(ranks, mode, layout):
    for rank, errs in enumerate(ranks(2).run(sc.strided_input_matches, mode, layout)):
        keeps = errs.pop("keeps_channels_last", 1.0)
        assert keeps == 1.0, f"rank {rank}: channels_last input gave a differently laid out output"
        bad = {k: v for k, v in errs.items() if v > 2e-5}
        assert not bad, f"rank {rank} ({layout}, {mode}): relative errors {bad}"


@pytest.mark.parametrize("mode", ["allgather", "allreduce"])
def test_nan_and_inf_propagate_like_local_batchnorm(ranks, mode):
    for rank, res in enumerate(ranks(2).run(sc.nan_inf_like_local_bn, mode)):
        assert not res["problems"], f"rank {rank} ({mode}): {res['problems']}"
        assert res["nan_channels"] == [1, 2], res
