"""LayerNorm computed in fp32 inside low-precision models (deep stacks overflow otherwise)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm"]


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose statistics are taken in fp32 whatever the input or autocast dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        # no autocast under fx (the device is a proxy there) nor on the meta device (autocast has no meta backend)
        if torch.fx._symbolic_trace.is_fx_symbolic_tracing() or x.device.type == "meta":
            return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)
