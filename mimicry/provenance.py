"""What made a run: the code (git commit, and the patch when the tree was dirty), the library
versions, the machine and the exact command line. Written once when a run starts, as
``provenance.json`` (+ ``code.patch``) in its folder and as TensorBoard text, so that a run found a
week later says which code to check out to make it again. Read back by `mimicry diff`.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

COMMAND_ENV = "MIMICRY_COMMAND"  # the command as typed, set by the CLI: sweep workers and DDP ranks inherit it
PROVENANCE_FILE = "provenance.json"
PATCH_FILE = "code.patch"
PATCH_LIMIT = 5_000_000   # bytes: a bigger diff (a dataset committed by mistake) is noted, not copied
UNTRACKED_LIMIT = 200_000  # bytes: untracked files up to this size go into the patch as new files
COMMIT = re.compile(r"^[0-9a-f]{7,64}$")  # what a commit id looks like; anything else read from a file is not one
CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) mimicry runs from
PACKAGES = ("mimicry", "torch", "pytorch-lightning", "lightning", "hydra-core", "torchvision", "tensorboard", "numpy")


def collect(command: str | None = None) -> tuple[dict[str, Any], str]:
    """(the provenance record, the code patch: "" when the tree is clean or not a git checkout)."""
    code, patch = code_state(CODE_ROOT)
    record = {
        "command": command or os.environ.get(COMMAND_ENV) or shlex.join(["mimicry", *sys.argv[1:]]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": code,
        "versions": versions(),
        "machine": machine(),
    }
    return record, patch


def code_state(root: Path) -> tuple[dict[str, Any], str]:
    """The git state of the checkout mimicry runs from. An installed wheel (no checkout, or one that
    only contains it, such as a virtual environment inside a project) records no commit."""
    root = Path(root).resolve()
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=30)

    try:
        top = git("rev-parse", "--show-toplevel")
    except (OSError, subprocess.TimeoutExpired):
        return {"git": None, "note": "git is not installed"}, ""
    if top.returncode != 0 or Path(top.stdout.decode().strip()).resolve() != root:
        return {"git": None, "note": f"mimicry runs from {root}, not a git checkout (an installed package)"}, ""
    head = git("rev-parse", "HEAD").stdout.decode().strip()
    branch = git("rev-parse", "--abbrev-ref", "HEAD").stdout.decode().strip()
    status = git("status", "--porcelain", "--untracked-files=normal").stdout.decode().splitlines()
    untracked = [line[3:] for line in status if line.startswith("?? ")]
    code: dict[str, Any] = {"git": {"commit": head, "branch": branch, "dirty": bool(status),
                                    "changed_files": [line[3:] for line in status if not line.startswith("?? ")],
                                    "untracked_files": untracked}}
    if not status:
        return code, ""
    patch = git("diff", "HEAD", "--binary").stdout.decode(errors="replace")
    for name in untracked:  # new files as `git diff` shows them, so `git apply` recreates them
        path = root / name
        if path.is_file() and path.stat().st_size <= UNTRACKED_LIMIT:
            patch += git("diff", "--no-index", "--binary", "--", "/dev/null", name).stdout.decode(errors="replace")
    if len(patch.encode()) > PATCH_LIMIT:
        code["git"]["patch_note"] = f"the diff is {len(patch.encode()) / 1e6:.0f} MB: not copied into the run"
        return code, ""
    return code, patch


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import torch

    found["torch"] = torch.__version__  # with its build tag (+cpu, +cu130), which the package metadata leaves out
    found["torch_cuda_build"] = torch.version.cuda  # the CUDA torch was built for; the GPUs are under machine
    found["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return found


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"host": platform.node(), "os": platform.platform(), "cpu": cpu_model(),
                            "cpu_count": os.cpu_count(),
                            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                            "memory_gb": memory_gb()}
    if torch.cuda.is_available():
        info["gpus"] = [{"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
                        for props in map(torch.cuda.get_device_properties, range(torch.cuda.device_count()))]
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def write(run_dir: Path, record: dict[str, Any], patch: str) -> None:
    """provenance.json (+ code.patch) in the run folder. A resumed run keeps the first record (the code
    that started it) and adds each resumption's under "resumed"."""
    path = Path(run_dir) / PROVENANCE_FILE
    previous = read(run_dir) if path.is_file() else {}
    if previous.get("command"):
        record = {**previous, "resumed": [*previous.get("resumed", []), record]}
        patch_name = f"code.resumed-{len(record['resumed'])}.patch"
        record["resumed"][-1]["code"]["patch_file"] = patch_name if patch else None
    else:
        patch_name = PATCH_FILE
        record["code"]["patch_file"] = patch_name if patch else None
    path.parent.mkdir(parents=True, exist_ok=True)
    if patch:
        (path.parent / patch_name).write_text(patch)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def read(run_dir: Path) -> dict[str, Any]:
    """A run's provenance.json as data ({} when missing or damaged: it is a record, never instructions)."""
    try:
        found = json.loads((Path(run_dir) / PROVENANCE_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def commit_of(record: dict[str, Any]) -> str | None:
    """The recorded commit id, only when it looks like one (it is passed to git by `mimicry diff`)."""
    git = (record.get("code") or {}).get("git") if isinstance(record.get("code"), dict) else None
    commit = git.get("commit") if isinstance(git, dict) else None
    return commit if isinstance(commit, str) and COMMIT.match(commit) else None


def as_markdown(record: dict[str, Any]) -> str:
    """The record for TensorBoard's Text tab (indented lines are shown as preformatted text)."""
    git = (record.get("code") or {}).get("git")
    code = (f"commit {git['commit']} on {git['branch']}" + (" + uncommitted changes (code.patch)" if git["dirty"] else "")
            if git else (record.get("code") or {}).get("note", "no git"))
    lines = [f"command: {record.get('command')}", f"code: {code}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items() if v),
             "machine: " + ", ".join(f"{k} {v}" for k, v in (record.get("machine") or {}).items() if v is not None)]
    return "\n".join("    " + line for line in lines)
