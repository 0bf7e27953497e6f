"""L2-regularised multinomial logistic regression, fitted exactly for a chunk of episodes at once.

The linear probe of ``feature-extract`` (and of DANN and its source-only reference) fits, per episode,
``min_{W, b} mean_i CE(W z_i + b, y_i) + l2 ||W||^2`` on the support features. The problem is strictly
convex in ``W``, so any solver run to convergence lands on the same weights; this one is Newton's
method, batched over the episodes with nothing shared between them:

* **A small problem per episode.** The optimal ``W`` lies in the span of the ``S`` support features
  (its gradient does), so with the thin SVD ``Z = U diag(s) V^T`` the unknowns are ``W = Theta V^T``,
  ``Theta`` of shape ``[ways, r]``, ``r = min(S, D)``: ``(r + 1) ways`` numbers however wide the features
  (1,600 for a Conv4 on 84-pixel images). Each Newton direction comes from conjugate gradients on
  closed-form Hessian-vector products, so a 20-way episode (420 unknowns) never builds or factors its
  420 x 420 Hessian (a direct solve cost 5x L-BFGS's time there).
* **The bias along the all-ones direction** leaves the loss unchanged (a softmax ignores a shift), so the
  plain Hessian is singular there. A penalty ``(sum_c b_c)^2`` makes it definite and picks the minimiser
  with ``sum_c b_c = 0`` -- the one a gradient method started at zero stays on, since the gradient sums
  to zero over the classes.
* **Each episode takes its own steps**: a backtracking (Armijo) step length chosen from its own loss,
  and it stops when its own gradient is below ``TOLERANCE``. A chunk therefore gives every episode the
  weights it gets alone, to rounding: batched matrix products round differently from single ones on some
  CPUs, so an episode may stop a step earlier or later, within the tolerance (``tests/test_logreg.py``).

Computed in float64 whatever the features' dtype: the features are tiny next to the backbone's work,
and the optimum is then reached to rounding, not to a float32 tolerance.

Chose our own solver over ``torch.optim.LBFGS`` (version 1 of ``feature-extract``): that optimiser takes
one parameter set, so a chunk ran it episode by episode, Python-bound, at about the cost of the whole
backbone pass; and an L-BFGS over stacked episodes would share line searches and stopping tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: an episode stops when the largest absolute entry of its gradient is below this (float64)
TOLERANCE = 1e-10
#: step lengths tried by the backtracking line search, all at once: 1, 1/2, ..., 2^-20
STEP_LENGTHS = tuple(0.5 ** k for k in range(21))
#: the Armijo constant: a step must decrease the loss by this fraction of the decrease its slope predicts
ARMIJO = 1e-4


def fit_logistic_regression(z: Tensor, y: Tensor, ways: int, l2: float, max_steps: int) -> tuple[Tensor, Tensor]:
    """Weights ``[E, ways, D]`` and biases ``[E, ways]`` (``z``'s dtype) of the L2-regularised logistic
    regression of labels ``y`` (``long[E, S]``, in ``0..ways-1``) on features ``z`` (``[E, S, D]``), each
    episode on its own, by at most ``max_steps`` Newton steps."""
    weight, bias = _fit(z, y, ways, l2, max_steps)
    return weight.to(z.dtype), bias.to(z.dtype)


def _fit(z: Tensor, y: Tensor, ways: int, l2: float, max_steps: int) -> tuple[Tensor, Tensor]:
    z = z.double()
    u, sv, vh = torch.linalg.svd(z, full_matrices=False)  # vh: [E, r, D]
    x = torch.cat([u * sv.unsqueeze(1), torch.ones_like(u[..., :1])], -1)  # [E, S, r + 1]: coordinates, 1
    e, s, k = x.shape
    one_hot = F.one_hot(y, ways).double()
    # the penalties' curvature: 2 l2 on every weight, 2 (sum_c b_c)^2's on the bias block
    is_weight = torch.ones(k, dtype=torch.float64, device=z.device)
    is_weight[-1] = 0

    def loss(theta: Tensor) -> Tensor:  # theta [..., E, ways, k] -> [..., E]
        logits = x @ theta.mT
        ce = -(F.log_softmax(logits, -1) * one_hot).sum(-1).mean(-1)
        return ce + l2 * theta[..., :-1].pow(2).sum((-2, -1)) + theta[..., -1].sum(-1).pow(2)

    theta = torch.zeros(e, ways, k, dtype=torch.float64, device=z.device)
    lengths = torch.tensor(STEP_LENGTHS, dtype=torch.float64, device=z.device)
    for _ in range(max_steps):
        p = torch.softmax(x @ theta.mT, -1)  # [E, S, ways]
        grad = (p - one_hot).mT @ x / s  # [E, ways, k]
        grad = grad + 2 * l2 * theta * is_weight + 2 * theta[..., -1:].sum(-2, keepdim=True) * (1 - is_weight)
        active = grad.flatten(1).abs().amax(1) >= TOLERANCE
        if not bool(active.any()):
            break
        # the Newton direction: the Hessian's system solved by conjugate gradients, to a relative residual that
        # shrinks with the gradient (superlinear convergence); Hessian-vector products in closed form
        def hessian_times(v: Tensor) -> Tensor:
            xv = x @ v.mT  # [E, S, ways]
            curved = p * xv - p * (p * xv).sum(-1, keepdim=True)  # (diag p_i - p_i p_i^T) (V x_i)
            return curved.mT @ x / s + 2 * l2 * v * is_weight + 2 * v[..., -1:].sum(-2, keepdim=True) * (1 - is_weight)

        direction = conjugate_gradients(hessian_times, grad, active, forcing=0.5)
        # every step length at once; each episode takes the longest one that satisfies Armijo's test
        trials = theta - lengths.view(-1, 1, 1, 1) * direction
        slope = (grad * direction).sum((-2, -1))
        enough = loss(trials) <= loss(theta) - ARMIJO * lengths.unsqueeze(1) * slope
        first = torch.where(enough.any(0), enough.double().argmax(0), len(STEP_LENGTHS) - 1)
        step = trials[first, torch.arange(e, device=z.device)]
        theta = torch.where(active.view(-1, 1, 1), step, theta)
    return theta[..., :-1] @ vh, theta[..., -1]


def conjugate_gradients(matmul, b: Tensor, active: Tensor, forcing: float) -> Tensor:
    """Approximate solutions ``d`` of ``A d = b`` per episode (``b``: ``[E, ...]``, ``A`` positive definite,
    applied by ``matmul``), each episode stopping when its residual is below ``min(forcing, sqrt|b|) |b|``
    or after as many iterations as unknowns; inactive episodes get ``0``."""
    dims = tuple(range(1, b.dim()))
    norm = b.pow(2).sum(dims).sqrt()
    target = (torch.clamp(norm.sqrt(), max=forcing) * norm).pow(2)
    d, r = torch.zeros_like(b), b.clone()
    q, rr = r.clone(), norm.pow(2)
    running = active.clone()
    for _ in range(b[0].numel()):
        running = running & (rr > target)
        if not bool(running.any()):
            break
        aq = matmul(q)
        shape = (-1,) + (1,) * (b.dim() - 1)
        alpha = torch.where(running, rr / (q * aq).sum(dims).clamp_min(torch.finfo(b.dtype).tiny), 0).view(shape)
        d, r = d + alpha * q, r - alpha * aq
        rr_next = r.pow(2).sum(dims)
        beta = torch.where(running, rr_next / rr.clamp_min(torch.finfo(b.dtype).tiny), 0).view(shape)
        q, rr = torch.where(running.view(shape), r + beta * q, q), torch.where(running, rr_next, rr)
    return d
