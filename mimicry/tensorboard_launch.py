"""``mimicry tb PATH...``: TensorBoard on exactly the runs below the paths, each named by the
hyperparameters that differ between them (the rule of the `mimicry compare --plot` legend).

TensorBoard names a run by its folder below --logdir, and a sweep's job folders are named
`0_loss=ns` or `<time>_<id>_...`. So it gets a temporary folder of links instead, one per run,
`<name> -> <run>/tb`, which it only reads; the folder is removed when TensorBoard stops.
"""
from __future__ import annotations

import argparse
import errno
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from mimicry.errors import MimicryError
from mimicry.run_reading import Run, event_files, find_runs, read_run
from mimicry.run_rows import differing_keys, hparam_labels, make_rows, run_label


NAME_BYTES = 200  # a folder name must stay under the file system's 255 bytes

DESCRIPTION = """TensorBoard on exactly the runs below PATHs (run directories, sweep directories or
whole output trees), each run named by the hyperparameters that differ between them, on a free
port. Stops with Ctrl-C."""

EPILOG = """examples:
  mimicry tb outputs/gan/multirun/2026-01-02/10-00-00_ab12
  mimicry tb outputs/lm/2026-01-02/10-00-00_ab12_optim.lr=0.01 outputs/lm/2026-01-02/11-00-00_cd34 --port 6006
  mimicry tb outputs/rl --print-only      # the run names and the tensorboard command, nothing started
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mimicry tb", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="PATH", default=["outputs"],
                        help="run or sweep directories, or folders holding them (default: outputs)")
    parser.add_argument("--port", type=int, metavar="N", help="port to serve on (default: a free one)")
    parser.add_argument("--host", default="localhost", metavar="H",
                        help="address to serve on (default: localhost; 0.0.0.0 shows the runs to your whole network)")
    parser.add_argument("--print-only", action="store_true",
                        help="print the run names and the tensorboard command, and keep the folder of links it reads, "
                        "instead of starting it")
    args = parser.parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: choose a port between 1 and 65535, or leave --port out for a free one")
    return args


# ------------------------------------------------------------------------------------------------
# Run names


def run_names(runs: list[Run]) -> list[str]:
    """One folder name per run: its differing hyperparameters (its run label when none differ),
    made path-safe, and made unique by the run label, then by a number."""
    labels = [_path_safe(label) for label in hparam_labels(make_rows(runs, differing_keys(runs), [], None))]
    names = [_path_safe(f"{label} ({run_label(run)})") if labels.count(label) > 1 else label
             for label, run in zip(labels, runs)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else _path_safe(f"{name} #{seen[name]}"))
    return unique


def _path_safe(name: str) -> str:
    """A single folder name: no separators or control characters, not `.` or `..`, short enough."""
    name = "".join("-" if char in "/\\" else " " if ord(char) < 32 or char == "\x7f" else char for char in name)
    name = name.strip() or "run"
    if set(name) == {"."}:
        name = name.replace(".", "_")
    while len(name.encode()) > NAME_BYTES:
        name = name[:-1]
    return name


# ------------------------------------------------------------------------------------------------
# The folder TensorBoard reads


def runs_with_events(runs: list[Run], names: list[str]) -> tuple[list[tuple[str, Run]], list[str]]:
    """(name, run) of the runs whose tb/ holds event files, and a note for each one left out."""
    shown, notes = [], []
    for name, run in zip(names, runs):
        for note in run.notes:  # e.g. "summary.json unreadable": TensorBoard can still show the events
            notes.append(f"{run.path}: {note}")
        if not event_files(run.path):
            notes.append(f"{run.path}: no TensorBoard event files in tb/; left out")
        elif links_outside(run.path / "tb", run.path):
            notes.append(f"{run.path}: tb/ links outside the run folder; left out")  # a shared folder shows only itself
        else:
            shown.append((name, run))
    return shown, notes


def links_outside(tb: Path, run_dir: Path) -> bool:
    """Whether tb/, or a link anywhere below it, leads out of the run folder: TensorBoard follows
    links, and would read (and serve) whatever they lead to."""
    inside = run_dir.resolve()
    if not _leads_inside(tb, inside):
        return True
    for folder, subfolders, files in os.walk(tb):  # does not follow links: each one is checked instead
        for entry in (Path(folder, name) for name in subfolders + files):
            if entry.is_symlink() and not _leads_inside(entry, inside):
                return True
    return False


def _leads_inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder)
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        return False


def link_folder(shown: list[tuple[str, Run]]) -> Path:
    """A new temporary folder holding `<name> -> <run>/tb` for each run."""
    logdir = Path(tempfile.mkdtemp(prefix="mimicry-tb-"))
    for name, run in shown:
        (logdir / name).symlink_to((run.path / "tb").resolve(), target_is_directory=True)
    return logdir


def remove_link_folder(logdir: Path) -> None:
    """Unlink the links (never what they point to), then the folder."""
    for link in logdir.iterdir():
        link.unlink()
    logdir.rmdir()


# ------------------------------------------------------------------------------------------------
# The port


def choose_port(host: str, port: int | None) -> int:
    """The port asked for, checked free; else one the system picks as free."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise MimicryError(f"--host {host}: not an address of this machine ({error.strerror}); "
                           "try localhost or 0.0.0.0") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as TensorBoard binds: a closed port is free
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise MimicryError(f"port {port} on {host} is in use (another TensorBoard?); choose another "
                                   "with --port, or leave --port out for a free one") from None
            raise MimicryError(f"--host {host} --port {port or 'free'}: cannot serve there "
                               f"({error.strerror})") from None
        return probe.getsockname()[1]


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


# ------------------------------------------------------------------------------------------------
# The command


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # stop as Ctrl-C does: TensorBoard stopped, the link folder removed


def serve(command: list[str]) -> int:
    """Run TensorBoard until it exits, Ctrl-C, SIGTERM or SIGHUP; 0 when stopped by the user."""
    stops = (signal.SIGTERM, signal.SIGHUP)  # `kill`, a closed terminal
    previous = {signum: signal.signal(signum, _stop) for signum in stops}
    process = None
    try:
        process = subprocess.Popen(command)
        code = process.wait()
        if code != 0:
            raise MimicryError(f"TensorBoard exited with status {code} (its own message is above)")
        return 0
    except KeyboardInterrupt:
        print("stopped TensorBoard", file=sys.stderr)
        return 0
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def tb_command(argv: list[str]) -> int:
    args = parse_args(argv)
    runs = [read_run(path) for path in find_runs(args.paths)]
    shown, notes = runs_with_events(runs, run_names(runs))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not shown:
        raise MimicryError(f"none of the {len(runs)} runs under {', '.join(args.paths)} has TensorBoard event "
                           "files in its tb/ folder (a run writes them as it trains); nothing to show")
    port = choose_port(args.host, args.port)
    logdir = link_folder(shown)
    keep = args.print_only
    try:
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                   "--host", args.host]
        if not args.print_only:
            print(f"TensorBoard: {url(args.host, port)}")
        width = max(len(name) for name, _ in shown)
        print(f"runs ({len(shown)}):")
        for name, run in shown:
            print(f"  {name:<{width}}  {run.path}")
        if args.print_only:
            print(f"command: {shlex.join(command)}")
            print(f"logdir: {logdir} (links to the runs' tb/ folders; kept for that command: "
                  f"remove it with `rm -r {shlex.quote(str(logdir))}` when done)")
            return 0
        print(f"logdir: {logdir} (links to the runs' tb/ folders; removed when TensorBoard stops)", flush=True)
        return serve(command)
    finally:
        if not keep and os.path.isdir(logdir):
            remove_link_folder(logdir)
