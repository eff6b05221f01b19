"""Exponential moving average of a model's weights (evaluation and released checkpoints use it)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimiser step; buffers are copied.

    Args:
        model: the trained model (unwrapped from DDP).
        decay: 0.999 in the official recipe.

    ``ema.module`` is an eval-mode copy of the model holding the averaged weights.

    Raises:
        ValueError: ``decay`` outside ``[0, 1)``.

    Examples:
        >>> import torch
        >>> from gridattn.train import ModelEMA
        >>> model = torch.nn.Linear(4, 4)
        >>> ema = ModelEMA(model, decay=0.999)
        >>> optimizer = torch.optim.Adam(model.parameters())
        >>> model(torch.randn(8, 4)).square().mean().backward(); optimizer.step()
        >>> ema.update(model)                              # after every optimiser step
        >>> ema.module.training
        False
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the averaged parameters towards ``model``'s by ``1 - decay``; copy its buffers as they are."""
        for ema_param, param in zip(self.module.parameters(), model.parameters()):
            ema_param.lerp_(param.detach(), 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        """The averaged model's state dict (what checkpoints store under ``"ema"``)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Load averaged weights, e.g. when resuming."""
        self.module.load_state_dict(state)
