"""Shared model blocks that no single family's tests own."""

import pytest
import torch

from museforge.models.modules import BlockConv3d, BlockConvTranspose3d, fold_norm, make_norm, scale_norm


@pytest.mark.parametrize("kernel", [(1, 1, 12), (1, 3, 1), (4, 1, 1), (2, 2, 3)])
def test_block_convolutions_equal_torchs_convolutions_to_the_second_derivative(kernel):
    """The matrix-product convolutions must be the oneDNN ones in value, in the input gradient and in the
    gradient of that gradient (which the penalty trains the critic through)."""
    torch.manual_seed(0)
    for ours, theirs, x in (
        (BlockConv3d(3, 5, kernel), torch.nn.functional.conv3d, torch.randn(2, 3, 8, 12, 24)),
        (
            BlockConvTranspose3d(3, 5, kernel),
            torch.nn.functional.conv_transpose3d,
            torch.randn(2, 3, 2, 3, 4),
        ),
    ):
        results = []
        for conv in (ours, lambda t, m=ours, f=theirs: f(t, m.weight, m.bias, m.stride)):
            ours.zero_grad()
            xi = x.clone().requires_grad_(True)
            y = conv(xi)
            (grad,) = torch.autograd.grad(y.square().sum(), xi, create_graph=True)
            grad.square().sum().backward()
            results.append((y.detach(), grad.detach(), ours.weight.grad.clone(), ours.bias.grad.clone()))
        for mine, ref in zip(*results, strict=True):
            assert mine.shape == ref.shape
            torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("bias", [False, True])
def test_a_norm_folded_into_the_next_linear_layer_computes_the_same_function(kind, bias):
    """What the incremental decoder runs: the weightless normalisation, then the linear layer holding the norm's
    affine weights, equals linear(norm(x)) for trained (non-unit) norm weights."""
    torch.manual_seed(0)
    norm, linear = make_norm(kind, 48), torch.nn.Linear(48, 20, bias=bias)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        if kind == "layer":
            norm.bias.normal_()
    x = torch.randn(5, 48) * 3 + 1  # a nonzero mean: LayerNorm's centring matters
    weight, folded_bias = fold_norm(norm, linear)
    with torch.no_grad():
        torch.testing.assert_close(
            torch.nn.functional.linear(scale_norm(norm)(x), weight, folded_bias), linear(norm(x))
        )
    assert (folded_bias is None) == (kind == "rms" and not bias)


def test_rms_scaling_by_a_layer_norm_of_x_and_minus_x_is_rms_norm():
    x = torch.randn(3, 256) * 5
    rms = make_norm("rms", 256)
    torch.testing.assert_close(scale_norm(rms)(x), torch.nn.functional.rms_norm(x, (256,), eps=rms.eps))
    half = scale_norm(rms.half())(x.half())  # float16 in, float16 out, as close to float32 as fp16 allows
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), scale_norm(rms)(x), rtol=1e-3, atol=2e-3)
