"""Folders a command writes to, checked before any work starts.

Hydra creates the run directory itself and would fail with a traceback; a read-only or impossible
place (``hydra.run.dir=/proc/x``, a read-only working folder, ``out=`` on a file) should fail in
one line that names the folder and the setting that chose it.
"""
from __future__ import annotations

import os
from pathlib import Path

from mimicry.errors import MimicryError


def ensure_writable_dir(path: str | Path, setting: str, fix: str | None = None) -> Path:
    """Create ``path`` (and its parents) if needed; raise MimicryError when that is impossible.
    The message ends with ``fix``, by default: choose another folder with ``setting=DIR``."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = fix or f"choose a writable folder with {setting}=DIR"
    if not existing.is_dir():
        raise MimicryError(f"cannot write to {path}: {existing} is a file, not a folder; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MimicryError(f"cannot write to {path}: {existing} is not writable; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # read-only file system, /proc, no space, ...
        raise MimicryError(f"cannot create {path}: {error.strerror or error}; {fix}") from None
    return path
