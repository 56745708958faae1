"""mimicry: every task is one imitation machine. The command is `mimicry`; from Python,
``from mimicry import train, sample, compare`` (mimicry/api.py) runs the same code."""
from __future__ import annotations

from typing import Any

__all__ = ["train", "sample", "compare"]


def __getattr__(name: str) -> Any:  # imported on first use: `import mimicry.data` stays light
    if name in __all__:
        from mimicry import api

        return getattr(api, name)
    raise AttributeError(f"module 'mimicry' has no attribute {name!r}")
