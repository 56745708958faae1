"""What a resume test compares: a resumed run against the same run never stopped."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import read_events


def assert_same_weights(run_dir: Path, reference_dir: Path, atol: float = 1e-5) -> None:
    """last.ckpt of both runs: the same step and the same tensors (networks, EMA copies, buffers), up to float noise."""
    mine = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    theirs = torch.load(reference_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert mine["global_step"] == theirs["global_step"]
    assert mine["state_dict"].keys() == theirs["state_dict"].keys()
    for name, tensor in theirs["state_dict"].items():
        assert torch.allclose(mine["state_dict"][name].double(), tensor.double(), atol=atol), name


def assert_same_curve(run_dir: Path, reference_dir: Path, tag: str, rel: float = 1e-5) -> None:
    """The whole curve of ``tag``, point by point (one curve across both sessions of the resumed run)."""
    mine = dict(read_events(run_dir)["scalars"][tag])
    theirs = dict(read_events(reference_dir)["scalars"][tag])
    assert sorted(mine) == sorted(theirs), tag
    assert [mine[s] for s in sorted(theirs)] == pytest.approx([theirs[s] for s in sorted(theirs)], rel=rel, abs=1e-6), \
        (tag, [(s, mine[s], theirs[s]) for s in sorted(theirs) if abs(mine[s] - theirs[s]) > abs(theirs[s]) * rel + 1e-6][:4])
