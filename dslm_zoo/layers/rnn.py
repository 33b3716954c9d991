"""The local recurrent branch of R-Transformer (Wang et al. 2019, "R-Transformer: Recurrent Neural Network
Enhanced Transformer", arXiv:1907.05572, Sec. 3.1): every position runs a short RNN over the ``window`` inputs
ending at it (zero-padded at the start) and keeps the last hidden state, which carries local order without any
position embedding.

The paper uses LSTM, GRU or a plain RNN; the zoo uses the plain (Elman) RNN with ReLU, h_k = relu(W_ih x_k +
W_hh h_{k-1}), plus an output projection, because its moments have closed forms like the FFN's
(``dslm_zoo.theory.components.local_rnn``), which is what the DSLM init needs. The projection lets the init set
the branch's output variance as fc2 does for the FFN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LocalRNN"]


class LocalRNN(nn.Module):
    """``proj(h_window)`` with h_k = relu(ih(x_{t - window + k}) + hh(h_{k-1})), k = 1..window, h_0 = 0, for every
    position t of x (B, N, D); inputs before the first position are zeros. Causal: position t reads x_{<= t}."""

    def __init__(self, dim: int, window: int, device=None, dtype=None):
        super().__init__()
        if window < 1:
            raise ValueError(f"LocalRNN window must be >= 1, got {window}")
        self.window = window
        self.ih = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.hh = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype)
        self.proj = nn.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        # the input projection once for all positions, then window steps over shifted views: the same arithmetic as
        # running nn.RNN on n unfolded windows, without materialising them
        wx = self.ih(F.pad(x, (0, 0, self.window - 1, 0)))  # (B, N + window - 1, D); wx[:, j] reads x_{j - window + 1}
        h = F.relu(wx[:, :n])
        for k in range(1, self.window):
            h = F.relu(wx[:, k : k + n] + self.hh(h))
        return self.proj(h)

    def extra_repr(self) -> str:
        return f"window={self.window}"
