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


def output_root(pattern: str, run_dir: Path) -> Path:
    """The folder that holds a command's runs: the fixed part of Hydra's run (or sweep) directory
    pattern, e.g. ``outputs`` for ``outputs/${task}/${now:...}``; the run's parent for a fixed one."""
    fixed = pattern.split("${", 1)[0]
    if fixed == pattern or not fixed.strip():  # no interpolation (`hydra.run.dir=runs/a`), or it starts with one
        return Path(run_dir).parent
    root = Path(fixed) if fixed.endswith(("/", os.sep)) else Path(fixed).parent
    return root if str(root) not in ("", ".") else Path(run_dir).parent


def point_latest(root: Path, run_dir: Path) -> Path | None:
    """``root/latest`` → run_dir, a relative symlink (the folder can move or be shared), replaced
    atomically; None where there is nothing to point with (no symlinks, or ``latest`` is a real folder)."""
    link = Path(root) / "latest"
    if link.exists() and not link.is_symlink():
        return None  # the user's own file or folder: never replaced
    tmp = Path(root) / f".latest-{os.getpid()}"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(os.path.relpath(Path(run_dir).resolve(), Path(root).resolve()), target_is_directory=True)
        os.replace(tmp, link)
    except OSError:  # a file system without symlinks: the link is a convenience, the run goes on
        return None
    return link
