"""`python -m mimicry.cli ARGS` as a process forked from a server that has already imported torch,
Lightning and Hydra: the fresh process, exit status and output a subprocess gives, without paying
5-10 s of imports for each of the suite's hundreds of runs.

The server is multiprocessing's forkserver: one per pytest worker, started on first use, its
imports done before any thread or torch operation, so every child starts from the same clean state.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# What every run imports; mimicry.cli itself is left out so that runpy executes it as __main__.
PRELOAD = ["torch", "torchvision", "pytorch_lightning", "hydra", "omegaconf", "tensorboard",
           "torchmetrics", "mimicry.training", "mimicry.tasks", "mimicry.models", "mimicry.data"]

_context: multiprocessing.context.BaseContext | None = None


def _forkserver() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _exit_status(code: object) -> int:
    """What the interpreter turns `SystemExit(code)` into."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _child(args: list[str], cwd: str, env: dict[str, str], out_path: str, err_path: str) -> None:
    """In the forked process: become `python -m mimicry.cli ARGS` in cwd with env, output to files."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.modules.pop("mimicry.cli", None)
    sys.argv = ["-m", *args]  # runpy puts the module's path in argv[0], as `python -m` does
    status = 0
    try:
        runpy.run_module("mimicry.cli", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except BaseException:  # noqa: BLE001 - the interpreter's own report of an uncaught error
        sys.excepthook(*sys.exc_info())
        status = 1
    threading._shutdown()  # as the interpreter does at exit: wait for non-daemon threads, then run atexit
    atexit._run_exitfuncs()  # (a forked child skips both otherwise)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Like ``subprocess.run([python, -m, mimicry.cli, *args], capture_output=True, text=True)``."""
    with tempfile.TemporaryDirectory(prefix="mimicry-forked-") as scratch:
        out_path, err_path = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
        process = _forkserver().Process(target=_child, args=(list(args), str(cwd), dict(env), out_path, err_path))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(["mimicry", *args], timeout)
        read = lambda path: Path(path).read_text(errors="replace") if os.path.exists(path) else ""  # noqa: E731
        return subprocess.CompletedProcess(["mimicry", *args], process.exitcode, read(out_path), read(err_path))
