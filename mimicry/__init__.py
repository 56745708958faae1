"""mimicry: every task is one imitation machine. The command is `mimicry`; from Python,
``from mimicry import train, sample, compare`` (mimicry/api.py) runs the same code."""
from mimicry.api import compare, sample, train

__all__ = ["train", "sample", "compare"]
