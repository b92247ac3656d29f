"""Shared model blocks that no single family's tests own."""

import pytest
import torch

from museforge.models.modules import BlockConv3d, BlockConvTranspose3d


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
