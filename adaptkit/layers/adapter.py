"""The bottleneck adapter (Houlsby et al. 2019) as AIM uses it."""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    """Linear(D, D*ratio) -> GELU -> Linear(D*ratio, D), optionally with a skip connection.

    The second layer starts at zero, so a fresh adapter is exactly the identity (with skip) or
    exactly zero (without skip): the adapted network starts as the frozen image model.

    Args:
        dim: Token width D.
        ratio: Bottleneck width as a fraction of ``dim`` (AIM: 0.25).
        skip: Return ``x + f(x)`` instead of ``f(x)``.
    """

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True) -> None:
        super().__init__()
        hidden = max(1, round(dim * ratio))
        self.skip = skip
        self.fc1 = nn.Linear(dim, hidden)
        # Exact erf GELU, as in the reference, even where the backbone's MLP uses QuickGELU.
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(self.act(self.fc1(x)))
        return x + out if self.skip else out

    def extra_repr(self) -> str:
        return f"skip={self.skip}"
