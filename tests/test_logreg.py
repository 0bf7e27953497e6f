"""The batched Newton logistic regression of ``feature-extract``: it reaches the optimum a tightly run
``torch.optim.LBFGS`` reaches, gives each episode of a chunk the weights it gets alone, and stops early
only when told to."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtbench.methods.logreg import TOLERANCE, fit_logistic_regression

L2 = 1e-3


def features(episodes: int, ways: int, shots: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features around a random centre per class, as a pre-trained backbone gives them."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(episodes, ways, dim, generator=g, dtype=torch.float64).repeat_interleave(shots, 1)
    z = F.normalize(centres + torch.randn(episodes, ways * shots, dim, generator=g, dtype=torch.float64), dim=-1)
    return z, torch.arange(ways).repeat_interleave(shots).expand(episodes, -1)


def lbfgs(z: torch.Tensor, y: torch.Tensor, ways: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: torch's L-BFGS on the same objective, run far past its default tolerances."""
    w = torch.zeros(ways, z.shape[1], dtype=z.dtype, requires_grad=True)
    b = torch.zeros(ways, dtype=z.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=2000, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + L2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


@pytest.mark.parametrize("ways, shots, dim", [(5, 1, 64), (5, 5, 64), (20, 1, 64), (2, 40, 16)],
                         ids=["5w1s", "5w5s", "20w1s", "more-images-than-features"])
def test_it_reaches_the_optimum_lbfgs_reaches(ways, shots, dim, one_thread) -> None:
    z, y = features(3, ways, shots, dim)
    weight, bias = fit_logistic_regression(z, y, ways, L2, max_steps=50)
    assert weight.shape == (3, ways, dim) and bias.shape == (3, ways) and weight.dtype == torch.float64
    for e in range(3):
        w, b = lbfgs(z[e], y[e], ways)
        # the bias is fixed up to a common shift; both solvers keep the one that sums to zero
        torch.testing.assert_close(weight[e], w, atol=1e-5, rtol=0)
        torch.testing.assert_close(bias[e], b, atol=1e-5, rtol=0)
        assert abs(float(bias[e].sum())) < 1e-9
        # and the gradient of the objective vanishes there
        w_, b_ = weight[e].clone().requires_grad_(), bias[e].clone().requires_grad_()
        loss = F.cross_entropy(z[e] @ w_.T + b_, y[e]) + L2 * w_.pow(2).sum()
        grads = torch.autograd.grad(loss, (w_, b_))
        assert max(float(g.abs().max()) for g in grads) < 100 * TOLERANCE


def test_a_chunk_gives_each_episode_its_weights_alone(one_thread) -> None:
    # episodes of different difficulty take different numbers of steps; none waits for or moves another. Not bit
    # for bit: a batched matrix product rounds differently from a single one on some CPUs (AMD EPYC: 1e-12 after
    # 2 steps), and Newton's steps amplify it near the optimum, where an episode may stop a step earlier (1.6e-8)
    z, y = features(6, 5, 2, 32, seed=1)
    z[2] = z[2] * 0.1 + 0.9 * z[2, :1]  # near-duplicate images: a harder, slower episode
    for steps, tolerance in ((2, 1e-9), (50, 1e-6)):  # 2 steps: before any episode stops; 50: at the optimum
        weight, bias = fit_logistic_regression(z, y, 5, L2, max_steps=steps)
        for e in range(6):
            w, b = fit_logistic_regression(z[e:e + 1], y[e:e + 1], 5, L2, max_steps=steps)
            torch.testing.assert_close(weight[e:e + 1], w, rtol=0, atol=tolerance)
            torch.testing.assert_close(bias[e:e + 1], b, rtol=0, atol=tolerance)
    # the reference: one step fewer moves the weights by far more than either tolerance
    assert (fit_logistic_regression(z, y, 5, L2, max_steps=1)[0] - fit_logistic_regression(
        z, y, 5, L2, max_steps=2)[0]).abs().max() > 1e-3


def test_the_step_limit_stops_it_short_of_the_optimum(one_thread) -> None:
    z, y = features(2, 5, 1, 64)
    one, _ = fit_logistic_regression(z, y, 5, L2, max_steps=1)
    full, _ = fit_logistic_regression(z, y, 5, L2, max_steps=50)
    assert (one - full).abs().max() > 1e-3


def test_float32_features_give_float32_weights_at_the_float64_optimum(one_thread) -> None:
    z, y = features(2, 5, 5, 64)
    weight, bias = fit_logistic_regression(z.float(), y, 5, L2, max_steps=50)
    exact, _ = fit_logistic_regression(z.float().double(), y, 5, L2, max_steps=50)
    assert weight.dtype == bias.dtype == torch.float32
    torch.testing.assert_close(weight, exact.float())
