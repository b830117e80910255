"""The Bernoulli log-likelihood: the CPU path equals torch's BCE-with-logits, value and gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vae_cli.model.densities import bernoulli_log_likelihood


def torch_reference(x_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return -F.binary_cross_entropy_with_logits(
        x_logits, x.expand_as(x_logits), reduction="none"
    ).sum(-1)


def test_value_and_gradient_match_torch_in_float64() -> None:
    generator = torch.Generator().manual_seed(0)
    x_logits = (
        torch.randn(3, 5, 784, generator=generator, dtype=torch.float64) * 8
    ).requires_grad_()
    x = torch.rand(5, 784, generator=generator, dtype=torch.float64)  # grey pixels, broadcast
    x = torch.where(x < 0.3, torch.zeros_like(x), x)  # and some exact zeros
    ours, reference = bernoulli_log_likelihood(x_logits, x), torch_reference(x_logits, x)
    assert ours.shape == (3, 5)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-10)
    (grad,) = torch.autograd.grad(ours.sum(), x_logits)
    (expected,) = torch.autograd.grad(reference.sum(), x_logits)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_extreme_logits_stay_exact_and_finite() -> None:
    x_logits = torch.tensor([[100.0, -100.0, 0.0, 30.0]], requires_grad=True)
    x = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    log_px = bernoulli_log_likelihood(x_logits, x)
    # softplus(100) - 0, softplus(-100) + 100, log 2, softplus(30) - 30: -(200 + log 2 + ~0)
    assert torch.isclose(log_px, torch.tensor([-200.0 - 0.6931472]), rtol=0, atol=1e-4).all()
    log_px.sum().backward()
    torch.testing.assert_close(
        x_logits.grad, torch.tensor([[-1.0, 1.0, 0.5, torch.sigmoid(torch.tensor(-30.0)).item()]])
    )


def test_gradient_for_the_pixels_when_asked() -> None:
    x_logits = torch.randn(2, 784, dtype=torch.float64)
    x = torch.rand(2, 784, dtype=torch.float64, requires_grad=True)
    (ours,) = torch.autograd.grad(bernoulli_log_likelihood(x_logits, x).sum(), x)
    (expected,) = torch.autograd.grad(torch_reference(x_logits, x).sum(), x)
    torch.testing.assert_close(ours, expected)
