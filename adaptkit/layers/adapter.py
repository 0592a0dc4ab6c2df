"""The bottleneck adapter (Houlsby et al. 2019) as AIM uses it."""

from __future__ import annotations

import torch
from torch import nn

from adaptkit.layers.frames import check_positive


class Adapter(nn.Module):
    """Linear(D, D*ratio) -> GELU -> Linear(D*ratio, D), optionally with a skip connection.

    The Adapter of Houlsby et al. (2019) as AIM adopts it (AIM Sec. 3.2 and Fig. 2(a)): with the
    skip for spatial adaptation (Sec. 3.2), without it for temporal and joint adaptation (Sec. 3.3,
    3.4). The second layer starts at zero (AIM App. A.1), so a fresh adapter is exactly the identity
    (with skip) or exactly zero (without skip): the adapted network starts as the frozen image model.

    Args:
        dim: Token width D.
        ratio: Bottleneck width as a fraction of ``dim`` (AIM App. A: 0.25); at least one hidden unit.
        skip: Return ``x + f(x)`` instead of ``f(x)``.

    Raises:
        ValueError: if ``ratio`` is not > 0.
    """

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True) -> None:
        super().__init__()
        check_positive("Adapter ratio", ratio)
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
        """Tokens (*, D) -> (*, D), token by token: ``x + f(x)`` with skip, else ``f(x)``."""
        out = self.fc2(self.act(self.fc1(x)))
        return x + out if self.skip else out

    def extra_repr(self) -> str:
        return f"skip={self.skip}"
