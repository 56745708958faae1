"""A GPT you can read in one sitting (after nanoGPT's model.py), with a KV cache for generation.

It knows nothing about text: tokens are ids in ``[0, vocab_size)``, whether they are characters,
bytes, pixel levels, patch codes or trajectory pieces. Tasks that build their own input vectors
(e.g. a Decision Transformer's returns, states and actions) call ``trunk`` on embeddings directly.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mimicry.errors import MimicryError

KVCache = list  # one (keys, values) pair per layer, each (B, heads, T, head_dim); empty = nothing cached


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask = None
        if past is not None:  # generation: new tokens attend to everything cached before them...
            cached = past[0].size(2)
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            if T > 1:  # ...and, when several come at once, to each other only causally
                mask = torch.ones(T, cached + T, dtype=torch.bool, device=x.device).tril(diagonal=cached)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=past is None and T > 1,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y)), (k, v)


#: model.activation → nn.GELU's approximation; GPT-2's own weights were trained with the tanh one ("gelu_new")
GELUS = {"gelu": "none", "gelu_tanh": "tanh"}


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, activation: str = "gelu",
                 norm_eps: float = 1e-5):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=norm_eps, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, eps=norm_eps, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd, bias=bias), nn.GELU(approximate=GELUS[activation]),
            nn.Linear(4 * n_embd, n_embd, bias=bias), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, past=None):
        attended, kv = self.attn(self.ln_1(x), past)
        x = x + attended
        return x + self.mlp(self.ln_2(x)), kv


class GPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int = 64, n_layer: int = 4, n_head: int = 4,
                 n_embd: int = 128, dropout: float = 0.0, bias: bool = False, activation: str = "gelu",
                 norm_eps: float = 1e-5):
        super().__init__()
        if activation not in GELUS:
            raise MimicryError(f"model.activation={activation!r}: choose one of {', '.join(GELUS)}")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias, activation, norm_eps) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=norm_eps, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # tied input and output embeddings
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.position_embedding.weight.numel()

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = idx.size(1)
        if start + T > self.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.block_size}")
        positions = torch.arange(start, start + T, device=idx.device)
        return self.drop(self.token_embedding(idx) + self.position_embedding(positions))

    def trunk(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Run the transformer on input vectors (B, T, n_embd); fills ``cache`` when one is given."""
        for i, block in enumerate(self.blocks):
            past = cache[i] if cache is not None and len(cache) > i else None
            x, kv = block(x, past)
            if cache is not None:
                cache[i:i + 1] = [kv]
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for the token after each position of ``idx`` (B, T)."""
        start = cache[0][0].size(2) if cache else 0
        return self.lm_head(self.trunk(self.embed(idx, start), cache))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, use_cache: bool = True, generator: torch.Generator | None = None,
                 allowed: slice | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T), one at a time.

        With the cache each step costs one token's work. Without it, every step re-reads the last
        ``block_size`` tokens. When the cache fills up, it is rebuilt from the last half-block, so
        the cached model then conditions on between block_size/2 and block_size tokens.
        ``allowed`` restricts sampling to a slice of the vocabulary (e.g. pixel levels, not class tokens).
        """
        cache: KVCache | None = None
        for _ in range(max_new_tokens):
            if not use_cache:
                logits = self(idx[:, -self.block_size:])
            elif cache is None or cache[0][0].size(2) >= self.block_size:
                keep = self.block_size if cache is None else self.block_size // 2
                cache = []  # (re)fill from the recent context
                logits = self(idx[:, -keep:], cache)
            else:
                logits = self(idx[:, -1:], cache)
            next_token = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator, allowed)
            idx = torch.cat([idx, next_token], dim=1)
        return idx


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None,
                allowed: slice | None = None) -> torch.Tensor:
    """One token id per row from logits (B, vocab): temperature, then top-k, then nucleus (top-p)."""
    logits = logits.float()  # bf16 logits (autocast) would round the probabilities to 8 bits of mantissa
    if allowed is not None:
        masked = torch.full_like(logits, float("-inf"))
        masked[:, allowed] = logits[:, allowed]
        logits = masked
    if temperature <= 0:  # greedy
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
