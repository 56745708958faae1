"""Losses for sequence models: the prediction is a distribution over the next token."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class NextTokenCrossEntropy(nn.Module):
    """Mean cross-entropy (nats per token) between logits (B, T, V) and the reference ids (B, T).

    Its exponent is the perplexity; divided by ln 2 it is bits per token (bits/char, bits/dim).
    """

    def __init__(self, ignore_index: int = -100):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), reference.reshape(-1),
                               ignore_index=self.ignore_index)


def nats_to_bits(nats: float | torch.Tensor) -> float | torch.Tensor:
    return nats / math.log(2)
