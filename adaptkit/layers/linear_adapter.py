"""A bottleneck adapter without activation: one affine map, foldable into a neighbouring frozen linear layer."""

from __future__ import annotations

import torch
from torch import nn

from adaptkit.layers.frames import check_positive


class LinearAdapter(nn.Module):
    """``x + scale * up(down(x))`` with no activation (ZeroI2V's linear adapter, ECCV 2024).

    The whole adapter is the affine map ``x -> (I + M) x + c`` with ``M = scale * W_up W_down`` and
    ``c = scale * (W_up b_down + b_up)`` (:meth:`affine`), so it folds exactly into a frozen linear
    layer it sits right before or right after (:func:`fold_before`, :func:`fold_after`). The up
    projection starts at zero: a fresh adapter is exactly the identity.

    Args:
        dim: Token width D.
        ratio: Bottleneck width as a fraction of ``dim`` (the reference: 0.25); at least one hidden unit.
        scale: Weight of the bottleneck branch (the reference: 0.5).

    Raises:
        ValueError: if ``ratio`` is not > 0.
    """

    def __init__(self, dim: int, ratio: float = 0.25, scale: float = 0.5) -> None:
        super().__init__()
        check_positive("LinearAdapter ratio", ratio)
        hidden = max(1, round(dim * ratio))
        self.scale = scale
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.trunc_normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (*, D) -> (*, D), token by token: ``x + scale * up(down(x))``."""
        return x + self.scale * self.up(self.down(x))

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M (D, D), c (D,)) in float64, such that ``forward(x) == x + x @ M.T + c``."""
        w_down, b_down = self.down.weight.double(), self.down.bias.double()
        w_up, b_up = self.up.weight.double(), self.up.bias.double()
        return self.scale * (w_up @ w_down), self.scale * (w_up @ b_down + b_up)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def fold_before(weight: torch.Tensor, bias: torch.Tensor, adapter: LinearAdapter) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') of ``linear(adapter(x))``: W' = W (I + M), b' = b + W c. Computed in float64, returned in W's dtype."""
    m, c = adapter.affine()
    w, b = weight.double(), bias.double()
    return (w + w @ m).to(weight.dtype), (b + w @ c).to(bias.dtype)


def fold_after(weight: torch.Tensor, bias: torch.Tensor, adapter: LinearAdapter) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') of ``adapter(linear(x))``: W' = (I + M) W, b' = (I + M) b + c. Float64 inside, W's dtype out."""
    m, c = adapter.affine()
    w, b = weight.double(), bias.double()
    return (w + m @ w).to(weight.dtype), (b + m @ b + c).to(bias.dtype)
