"""The GPT: causal, cached generation equals uncached, sampling filters do what they say."""
from __future__ import annotations

import torch

from mimicry.models.gpt import GPT, sample_next


def tiny_gpt(block_size: int = 16) -> GPT:
    torch.manual_seed(0)
    return GPT(vocab_size=11, block_size=block_size, n_layer=2, n_head=2, n_embd=16).eval()


def test_logits_shape_and_tied_embeddings():
    model = tiny_gpt()
    assert model(torch.randint(11, (3, 7))).shape == (3, 7, 11)
    assert model.lm_head.weight is model.token_embedding.weight


def test_causal_a_later_token_never_changes_earlier_logits():
    model = tiny_gpt()
    idx = torch.randint(11, (1, 10))
    changed = idx.clone()
    changed[0, 6] = (idx[0, 6] + 1) % 11
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6) and not torch.allclose(a[:, 6:], b[:, 6:])


def test_cache_gives_the_same_logits_as_a_full_forward():
    model = tiny_gpt()
    idx = torch.randint(11, (2, 12))
    full = model(idx)
    cache: list = []
    steps = [model(idx[:, :5], cache)] + [model(idx[:, t:t + 1], cache) for t in range(5, 12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_several_tokens_fed_onto_a_cache_stay_causal():
    model = tiny_gpt()
    idx = torch.randint(11, (2, 12))
    full = model(idx)
    cache: list = []
    chunks = [model(idx[:, :4], cache), model(idx[:, 4:9], cache), model(idx[:, 9:], cache)]
    assert torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-5)  # a chunk never sees its own future


def test_greedy_generation_with_and_without_cache_agree_within_the_context():
    model = tiny_gpt(block_size=16)
    prompt = torch.randint(11, (2, 3))
    for use_cache in (True, False):
        written = model.generate(prompt, 13, temperature=0, use_cache=use_cache)
        # Each token written is the full model's greedy choice there: its logit is the maximum up to
        # float noise (comparing the two paths' token ids would hinge on BLAS rounding at near-ties).
        with torch.no_grad():
            logits = model(written[:, :-1])[:, prompt.size(1) - 1:]
        chosen = logits.gather(-1, written[:, prompt.size(1):, None]).squeeze(-1)
        assert torch.allclose(chosen, logits.max(-1).values, atol=1e-5), use_cache
    assert model.generate(prompt, 40, temperature=0).shape == (2, 43)  # past the context: the cache refills


def test_top_k_and_top_p_keep_only_the_likely_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, top_k=2, generator=gen).flatten().tolist()) == {0, 1}
    assert set(sample_next(logits, top_p=0.7, generator=gen).flatten().tolist()) == {0, 1}
    assert set(sample_next(logits, top_p=0.45, generator=gen).flatten().tolist()) == {0}
    assert sample_next(logits[:1], temperature=0).item() == 0
    assert set(sample_next(logits, allowed=slice(2, 4), generator=gen).flatten().tolist()) == {2, 3}


def test_trunk_takes_embeddings_directly():
    model = tiny_gpt()
    hidden = model.trunk(torch.randn(2, 5, 16))
    assert hidden.shape == (2, 5, 16)
