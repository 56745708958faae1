"""The learning-rate schedule every task shares: linear warmup, cosine decay, then flat."""
from __future__ import annotations

import math

import pytest
import torch

from mimicry.tasks.base import build_optimizer, warmup_cosine


def test_warmup_rises_linearly_to_the_peak():
    schedule = warmup_cosine(warmup_steps=10, decay_steps=110, min_ratio=0.1)
    rises = [schedule(step) for step in range(10)]
    assert rises[0] == pytest.approx(1 / 11)
    assert all(b - a == pytest.approx(1 / 11) for a, b in zip(rises, rises[1:]))
    assert schedule(10) == pytest.approx(1.0)


def test_cosine_decays_to_the_floor_and_stays():
    schedule = warmup_cosine(warmup_steps=10, decay_steps=110, min_ratio=0.1)
    decay = [schedule(step) for step in range(10, 111)]
    assert all(b < a for a, b in zip(decay, decay[1:]))
    assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: half way between peak and floor
    assert schedule(35) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.25)))
    assert schedule(110) == pytest.approx(0.1) and schedule(10_000) == pytest.approx(0.1)


def test_optimizer_decays_matrices_only_and_follows_the_schedule():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    built = build_optimizer(model.parameters(), {"lr": 1.0, "min_lr": 0.1, "weight_decay": 0.5,
                                                 "warmup_steps": 2, "decay_steps": 12}, total_steps=100)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    decayed, plain = optimizer.param_groups
    assert [p.dim() for p in decayed["params"]] == [2] and decayed["weight_decay"] == 0.5
    assert all(p.dim() == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0
    lrs = []
    for _ in range(14):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1 / 3) and lrs[2] == pytest.approx(1.0) and lrs[12] == pytest.approx(0.1)


def test_an_unknown_run_length_keeps_the_rate_flat_instead_of_guessing_a_decay():
    model = torch.nn.Linear(2, 2)
    built = build_optimizer(model.parameters(), {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 2}, total_steps=math.inf)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(50_000 // 1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(1000):
            scheduler.step()
    assert lrs[0] == pytest.approx(1 / 3) and all(lr == pytest.approx(1.0) for lr in lrs[1:])
