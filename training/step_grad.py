"""Weights that multiply an input at every step of the decoder's recurrence, with their gradient taken once.

Autograd computes dW += g_iᵀ x_i at every step i: a product with a small inner dimension (the batch) that writes
a full-size matrix, then an addition that reads it back, ~20 times per batch. Deferred, the same gradient is
dW = [g_1; ...; g_m]ᵀ [x_1; ...; x_m]: one large product at the end of the backward pass (~7% of a CPU training
step at the Multi30k size). The result is the same sum, in another order.
"""

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function


class _Steps:
    """Each step's input x_i (from forward) and output gradient g_i (from backward), by step number."""

    def __init__(self) -> None:
        self.x: list[Tensor] = []
        self.g: dict[int, Tensor] = {}


class _Gradient(Function):
    """Identity on W in forward. Its backward runs once every step's product has passed its g_i back (they all
    take its output as input), and returns the whole gradient in one product."""

    @staticmethod
    def forward(ctx: Any, W: Tensor, steps: _Steps) -> Tensor:
        ctx.steps = steps
        return W.view_as(W)

    @staticmethod
    def backward(ctx: Any, _: Tensor) -> tuple[Tensor, None]:
        steps = ctx.steps
        g = torch.cat([steps.g[i] for i in range(len(steps.x))])
        dW = g.t() @ torch.cat(steps.x)
        # steps.x holds tensors whose graph holds the nodes whose ctx holds steps: a cycle through autograd's
        # C++ nodes that Python's collector cannot see, so the whole batch's graph would stay in memory.
        steps.x.clear()
        steps.g.clear()
        return dW, None


class _Product(Function):
    """x Wᵀ for one step; backward returns the input's gradient and keeps g_i for _Gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, W: Tensor, steps: _Steps) -> Tensor:
        ctx.save_for_backward(W)
        ctx.steps, ctx.i = steps, len(steps.x)
        steps.x.append(x)
        return x @ W.t()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
        (W,) = ctx.saved_tensors
        ctx.steps.g[ctx.i] = g
        return g @ W, None, None


class StepLinear:
    """x -> x Wᵀ at every step of one batch. With `defer` (training), W's gradient is taken in one product."""

    def __init__(self, W: Tensor, defer: bool) -> None:
        self.steps = _Steps() if defer else None
        self.W = _Gradient.apply(W, self.steps) if defer else W

    @property
    def out_features(self) -> int:
        return self.W.size(0)

    def __call__(self, x: Tensor) -> Tensor:
        if self.steps is None:
            return x @ self.W.t()
        return _Product.apply(x, self.W, self.steps)
