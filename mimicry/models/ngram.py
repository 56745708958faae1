"""An n-gram lookup table: next-token probabilities counted from the training text.

The table imitates its training data by remembering it: for every context of up to ``n - 1``
tokens it counts which token came next. It has no parameters for an optimizer
(``fitted_by_counting``): the task (mimicry/tasks/counted_fit.py) calls ``count(batch)`` on each training batch of one pass
over the text, and the lm task computes its loss, perplexity and bits per character exactly as
it does for the GPT, from the log-probabilities ``forward`` returns.

Probabilities: add-k smoothing with back-off to the longest context seen in training.
For the token after context ``c`` (the last ``n - 1`` tokens, fewer at the start of a window):

    P(x | c) = (count(c, x) + k) / (count(c) + k·V)

using the longest suffix of ``c`` that occurs in the training counts (down to the empty context,
whose counts are the token frequencies). Every row is a proper distribution (it sums to one), an
unseen next token keeps probability k / (count(c) + k·V), and an unseen context falls back to
a shorter one instead of to the uniform guess.

Counts are stored as sorted int64 buffers (one pair per context length): checkpoints, resume and
``mimicry sample`` work as for any model. ``n`` and ``k`` may be lowered after counting (the
benchmark does): the lower-order counts are the same ones a smaller table would have counted.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from mimicry.errors import MimicryError
from mimicry.models.gpt import sample_next

INT64_KEYS = 2**62  # (context, next token) codes must fit an int64


class NGramTable(nn.Module):
    #: the task base honours this: no optimizer, ``count(batch)`` after every training batch
    fitted_by_counting = True

    def __init__(self, vocab_size: int, n: int = 4, k: float = 0.1, block_size: int = 64):
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise MimicryError(f"model.n={n!r}: the n-gram order must be a whole number ≥ 1 (1 = token frequencies)")
        if not k > 0:
            raise MimicryError(f"model.k={k!r}: add-k smoothing needs k > 0 (an unseen token would cost infinite loss), "
                               f"e.g. model.k=0.1")
        if vocab_size ** n >= INT64_KEYS:
            raise MimicryError(f"model.n={n}: {vocab_size} tokens to the power n do not fit 64-bit keys; use a smaller n")
        self.vocab_size, self.n, self.k, self.block_size = vocab_size, n, float(k), block_size
        self.orders = n  # context lengths 0 .. n-1 are counted
        for order in range(n):  # sorted (context·V + next) codes and their counts
            self.register_buffer(f"keys_{order}", torch.zeros(0, dtype=torch.long))
            self.register_buffer(f"counts_{order}", torch.zeros(0, dtype=torch.long))
        self._contexts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # derived from the buffers, rebuilt on change

    # ---- counting --------------------------------------------------------------------------------
    def context_codes(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """For each context length j < orders: the code of the j tokens ending at each position of
        ``idx`` (B, T) (base V, the oldest token first), -1 where the window holds fewer than j."""
        V, T = self.vocab_size, idx.size(1)
        positions = torch.arange(T, device=idx.device)
        codes, code = [torch.zeros_like(idx)], torch.zeros_like(idx)
        for j in range(1, self.orders):
            oldest = torch.roll(idx, j - 1, dims=1)  # token at t - j + 1 (wrapped values are masked below)
            code = oldest * V ** (j - 1) + code
            codes.append(torch.where(positions >= j - 1, code, torch.full_like(code, -1)))
        return codes

    @torch.no_grad()
    def count(self, tokens: torch.Tensor) -> None:
        """Add the n-grams of a batch of windows (B, T + 1): each token after the first, with each
        context of up to n - 1 tokens that the window holds before it."""
        idx, following = tokens[:, :-1], tokens[:, 1:]
        for order, code in enumerate(self.context_codes(idx)):
            seen = code >= 0
            keys, counts = torch.unique(code[seen] * self.vocab_size + following[seen], return_counts=True)
            self._merge(order, keys, counts)
        self._contexts.clear()

    def _merge(self, order: int, keys: torch.Tensor, counts: torch.Tensor) -> None:
        """Add sorted unique ``keys`` with ``counts`` into the sorted buffers of one order, without re-sorting."""
        old_keys, old_counts = getattr(self, f"keys_{order}"), getattr(self, f"counts_{order}")
        position = torch.searchsorted(old_keys, keys)
        found = position < len(old_keys)
        found[found.clone()] = old_keys[position[found]] == keys[found]
        old_counts.index_add_(0, position[found], counts[found])
        new_keys, new_counts, at = keys[~found], counts[~found], position[~found]
        if len(new_keys):
            size = len(old_keys) + len(new_keys)
            slot = at + torch.arange(len(new_keys), device=keys.device)  # where each new key lands
            is_new = torch.zeros(size, dtype=torch.bool, device=keys.device)
            is_new[slot] = True
            merged_keys, merged_counts = old_keys.new_empty(size), old_counts.new_empty(size)
            merged_keys[is_new], merged_counts[is_new] = new_keys, new_counts
            merged_keys[~is_new], merged_counts[~is_new] = old_keys, old_counts
            setattr(self, f"keys_{order}", merged_keys)
            setattr(self, f"counts_{order}", merged_counts)

    def contexts(self, order: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sorted context codes, how often each was followed by any token) for one context length."""
        if order not in self._contexts:
            keys, counts = getattr(self, f"keys_{order}"), getattr(self, f"counts_{order}")
            context, inverse = torch.unique_consecutive(keys // self.vocab_size, return_inverse=True)
            totals = torch.zeros(len(context), dtype=torch.long, device=keys.device).index_add_(0, inverse, counts)
            self._contexts[order] = (context, totals)
        return self._contexts[order]

    # ---- probabilities ---------------------------------------------------------------------------
    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Which table row predicts the token after each position of ``idx`` (B, T): the longest
        context seen in training, as one code ``context·n + length`` (length 0 is the empty context)."""
        codes = self.context_codes(idx)
        best = torch.zeros_like(idx)  # the empty context: always "seen"
        for order in range(1, min(self.n, self.orders)):
            context, totals = self.contexts(order)
            if len(context) == 0:
                continue
            at = torch.searchsorted(context, codes[order]).clamp(max=len(context) - 1)
            seen = (context[at] == codes[order]) & (codes[order] >= 0)
            best = torch.where(seen, codes[order] * self.orders + order, best)
        return best

    def row_probabilities(self, rows: torch.Tensor) -> torch.Tensor:
        """Add-k probabilities (R, V), float64, of the next token for table rows (R,) from ``rows()``."""
        V = self.vocab_size
        order, context = rows % self.orders, rows // self.orders
        counts = torch.zeros(len(rows), V, dtype=torch.float64, device=rows.device)
        totals = torch.zeros(len(rows), dtype=torch.float64, device=rows.device)
        for j in range(self.orders):
            mine = order == j
            keys, found_counts = getattr(self, f"keys_{j}"), getattr(self, f"counts_{j}")
            if not mine.any() or len(keys) == 0:
                continue
            wanted = context[mine, None] * V + torch.arange(V, device=rows.device)  # every next token of the row
            at = torch.searchsorted(keys, wanted).clamp(max=len(keys) - 1)
            counts[mine] = torch.where(keys[at] == wanted, found_counts[at], 0).double()
            known, known_totals = self.contexts(j)
            totals[mine] = known_totals[torch.searchsorted(known, context[mine]).clamp(max=len(known) - 1)].double()
        return (counts + self.k) / (totals[:, None] + self.k * V)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, T, V) of the token after each position of ``idx`` (B, T): the
        logits the lm task's loss reads (they are already normalised)."""
        rows = self.rows(idx)
        unique_rows, where = torch.unique(rows, return_inverse=True)
        return self.row_probabilities(unique_rows).log().float()[where]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None, **_: object) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens sampled from the table to ``idx`` (B, T)."""
        for _step in range(max_new_tokens):
            logits = self(idx[:, -max(1, self.n - 1):])[:, -1, :]
            idx = torch.cat([idx, sample_next(logits, temperature, top_k, top_p, generator)], dim=1)
        return idx

    def as_weights(self, inputs: list[torch.Tensor]) -> "TableAsWeights":
        """The probabilities the rows of these inputs use, as a weight matrix (for the sharpness probe)."""
        return TableAsWeights(self, inputs)

    def num_entries(self) -> int:
        return sum(len(getattr(self, f"keys_{order}")) for order in range(self.orders))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # A saved table is as long as what it counted: take the saved sizes before copying.
        for order in range(self.orders):
            for name in (f"keys_{order}", f"counts_{order}"):
                if prefix + name in state_dict:
                    setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        self._contexts.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TableAsWeights(nn.Module):
    """The table's probabilities for the contexts a set of inputs uses, as one weight matrix, so
    a probe can perturb them the way it perturbs a net's weights. ``forward`` renormalises each
    row (after clamping at a tiny positive value), so a perturbed table is still a distribution."""

    def __init__(self, table: NGramTable, inputs: list[torch.Tensor]):
        super().__init__()
        self.table = [table]  # a list: not a submodule, so its buffers are not this module's state
        self.register_buffer("row_codes", torch.unique(torch.cat([table.rows(idx).flatten() for idx in inputs])))
        self.weight = nn.Parameter(table.row_probabilities(self.row_codes).float())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = torch.searchsorted(self.row_codes, self.table[0].rows(idx))
        weight = self.weight.clamp_min(1e-12)
        return (weight / weight.sum(dim=-1, keepdim=True)).log()[rows]
