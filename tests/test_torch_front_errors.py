"""The torch front's errors for parameters of another dtype than the input and
for a residual of the wrong shape: one error, naming the argument, with or
without a process group."""
import re

import pytest
import torch

import front_scenarios
from npu_syncbn import SyncBatchNorm


@pytest.mark.parametrize("case, needle", [
    ("float64 weight", r"TypeError: weight is torch.float64 but the input is torch.float32"),
    ("float64 running_var", r"TypeError: running_var is torch.float64 but the input is torch.float32"),
    ("residual shape", r"ValueError: residual must have the input's shape \(4, 3, 5\) \(or one that broadcasts to it\), "
                       r"got \(4, 2, 5\)"),
])
def test_same_error_on_one_and_two_ranks(ranks, case, needle):
    alone = front_scenarios.torch_front_error(0, 1, case)
    assert re.match(needle, alone), alone
    for rank, seen in enumerate(ranks(2).run(front_scenarios.torch_front_error, case)):
        assert re.match(needle, seen), (rank, seen)


@pytest.mark.parametrize("train", [True, False])
def test_float64_weight_in_eval_names_the_weight(train):
    bn = SyncBatchNorm(3).train(train)
    bn.weight.data = bn.weight.data.double()
    with pytest.raises(TypeError, match=r"weight is torch.float64 but the input is torch.float32: .* must be torch.float32"):
        bn(torch.randn(2, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_with_float32_parameters_still_works(dtype):
    torch.manual_seed(0)
    bn, ref = SyncBatchNorm(3).train(), torch.nn.BatchNorm1d(3).train()
    x = torch.randn(8, 3, 4).to(dtype)
    torch.testing.assert_close(bn(x), ref(x))
    with pytest.raises(TypeError, match=rf"weight is torch.float64 but the input is {dtype}: this layer's weight must be "
                                        rf"{dtype} or torch.float32"):
        bn.double()(x)


def test_float64_module_with_float64_input_works():
    torch.manual_seed(0)
    bn, ref = SyncBatchNorm(3).double().train(), torch.nn.BatchNorm1d(3).double().train()
    x = torch.randn(8, 3, dtype=torch.float64)
    torch.testing.assert_close(bn(x), ref(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 3, 6), (2, 5), (2, 4, 3, 5), (4, 1, 5, 1)])
def test_residual_that_does_not_broadcast_to_the_input(shape):
    bn = SyncBatchNorm(3, activation="relu").train()
    expected = f"residual must have the input's shape (4, 3, 5) (or one that broadcasts to it), got {shape}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        bn(torch.randn(4, 3, 5), torch.randn(*shape))


def test_residual_that_broadcasts_is_still_added():
    torch.manual_seed(0)
    bn, ref = SyncBatchNorm(3).train(), torch.nn.BatchNorm1d(3).train()
    x, r = torch.randn(4, 3, 5), torch.randn(3, 1)
    torch.testing.assert_close(bn(x, r), ref(x) + r)
