"""Tokenizers and the text datamodule: round trips, unknown characters, deterministic windows."""
from __future__ import annotations

import logging

import pytest
import torch

from mimicry.data.text import TextDataModule, WindowOrder
from mimicry.data.tokenizers import ByteTokenizer, CharTokenizer, tokenizer_from_state


def test_byte_tokenizer_round_trips_any_text():
    text = "naïve café — 日本 🙂"
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert ids.max() < 256 and tokenizer.decode(ids) == text
    assert tokenizer_from_state(tokenizer.state()).decode(ids) == text


def test_char_tokenizer_round_trips_and_drops_unknown_characters(caplog):
    tokenizer = CharTokenizer.fit("hello world")
    assert tokenizer.decode(tokenizer.encode("hello world")) == "hello world"
    with caplog.at_level(logging.WARNING):
        assert tokenizer.decode(tokenizer.encode("hello, world!")) == "hello world"
    assert "not in the vocabulary" in caplog.text and "data.tokenizer=byte" in caplog.text
    assert tokenizer_from_state(tokenizer.state()).vocab == tokenizer.vocab


def test_windows_are_the_input_plus_the_next_token_and_the_split_is_fixed():
    data = TextDataModule("pydoc", block_size=16, batch_size=4, steps_per_epoch=3, val_batches=2)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert batch.shape == (4, 17)
    assert data.spec()["vocab_size"] == data.tokenizer.vocab_size > 50
    assert len(data.val_tokens) == int(0.1 * (len(data.train_tokens) + len(data.val_tokens)))
    val_a = torch.cat(list(data.val_dataloader()))
    val_b = torch.cat(list(data.val_dataloader()))
    assert torch.equal(val_a, val_b)


def test_random_offsets_depend_on_seed_and_epoch_only():
    a, b = WindowOrder(1000, 8, seed=1), WindowOrder(1000, 8, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b) and len(list(a)) == len(a) == 8
    b.set_epoch(4)
    assert list(a) != list(b)


@pytest.mark.parametrize("samples, stride", [(8, 1), (None, 7)])
def test_two_ranks_share_one_process_windows_batch_by_batch(samples, stride):
    """Batch k of rank 0 and rank 1 together is batch k of one process with twice the batch."""
    one = list(WindowOrder(100, None if samples is None else 2 * samples, seed=5, stride=stride))
    ranks = [list(WindowOrder(100, samples, seed=5, stride=stride, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(WindowOrder(100, samples, 5, stride, 1, 2))  # DDP ranks step together
    batch = 2  # per rank
    for k in range(len(ranks[0]) // batch):
        together = ranks[0][k * batch:(k + 1) * batch] + ranks[1][k * batch:(k + 1) * batch]
        assert sorted(together) == sorted(one[2 * batch * k: 2 * batch * (k + 1)])
    if samples is None:  # in order: no window twice, none left out but the odd one at the end
        assert sorted(ranks[0] + ranks[1]) == list(range(0, 100, stride))[:14]


