"""``mimicry diff RUN_A RUN_B``: what differs between two runs, in three parts.

- config: every key of the two composed configs (.hydra/config.yaml) whose value differs, and the
  config-group choices (model=dcgan vs mlp_gan);
- code: the commits each ran (provenance.json), the commits between them and `git diff --stat`
  when this checkout has both, and the uncommitted changes (code.patch) when either tree was dirty;
  library versions and the machine where they differ;
- metrics: each metric's final and best value side by side.

Everything is read as data: a commit id is passed to git only when it looks like one, and only the
patch files mimicry writes (code.patch) are read from a run folder.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from mimicry import provenance
from mimicry.errors import MimicryError
from mimicry.run_reading import Run, flatten_config, format_value, read_run, read_scalars
from mimicry.run_rows import final_and_best
from mimicry.tables import render_markdown, render_table, write_output

PATCH_NAME = re.compile(r"^code(\.resumed-\d+)?\.patch$")
PATCH_READ_LIMIT = 5_000_000  # bytes of a run's code.patch read at most
ABSENT = "(absent)"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mimicry diff", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="What differs between two runs: their composed configs, the code they ran (commits and "
                    "uncommitted changes, from provenance.json), library versions, and their metrics.",
        epilog="example:\n  mimicry diff outputs/gan/2026-12-01/10-00-00_ab12 outputs/latest")
    parser.add_argument("run_a", metavar="RUN_A", help="a run directory")
    parser.add_argument("run_b", metavar="RUN_B", help="another run directory")
    parser.add_argument("--format", choices=("table", "md", "json"), default="table")
    parser.add_argument("--full", action="store_true", help="show the whole difference of the two patches")
    parser.add_argument("--out", metavar="FILE", help="write to FILE instead of printing")
    return parser.parse_args(argv)


def open_run(path: str) -> Run:
    folder = Path(path)
    if not folder.is_dir():
        raise MimicryError(f"no such run directory: {path}")
    if not (folder / "summary.json").is_file() and not (folder / ".hydra" / "config.yaml").is_file():
        raise MimicryError(f"{path} is not a mimicry run directory (no summary.json or .hydra/config.yaml); "
                           f"find runs with `mimicry runs`")
    return read_run(folder)


# ------------------------------------------------------------------------------------------------
# config


def config_differences(a: Run, b: Run) -> list[tuple[str, str, str]]:
    """(key, value in A, value in B): group choices first, then the flattened config, in A's order."""
    rows = []
    choices_a, choices_b = a.choices(), b.choices()
    for group in dict.fromkeys([*choices_a, *choices_b]):
        if group.startswith("hydra/"):
            continue
        va, vb = choices_a.get(group, ABSENT), choices_b.get(group, ABSENT)
        if va != vb:
            rows.append((f"{group} (group)", str(va), str(vb)))
    flat_a, flat_b = flatten_config(a.config), flatten_config(b.config)
    for key in dict.fromkeys([*flat_a, *flat_b]):
        va = format_value(flat_a[key]) if key in flat_a else ABSENT
        vb = format_value(flat_b[key]) if key in flat_b else ABSENT
        if va != vb:
            rows.append((key, va, vb))
    return rows


# ------------------------------------------------------------------------------------------------
# code


def code_line(record: dict[str, Any]) -> str:
    if not record:
        return "no provenance.json (a run from before mimicry recorded its code)"
    code = record.get("code") if isinstance(record.get("code"), dict) else {}
    git = code.get("git") if isinstance(code.get("git"), dict) else None
    if git is None:
        return str(code.get("note", "no git commit recorded"))
    commit = provenance.commit_of(record) or "?"
    dirty = git.get("dirty")
    files = len(git.get("changed_files") or []) + len(git.get("untracked_files") or [])
    return f"commit {commit[:12]} on {git.get('branch', '?')}" + (f" + uncommitted changes in {files} file(s)" if dirty else "")


def read_patch(run: Run, record: dict[str, Any]) -> str:
    """The run's code.patch: only that name, only inside its folder, only so many bytes."""
    name = ((record.get("code") or {}) if isinstance(record.get("code"), dict) else {}).get("patch_file")
    if not isinstance(name, str) or not PATCH_NAME.match(name):
        return ""
    path = run.path / name
    if not path.is_file() or path.is_symlink():
        return ""
    with open(path, "rb") as handle:
        return handle.read(PATCH_READ_LIMIT).decode(errors="replace")


def patch_files(patch: str) -> dict[str, str]:
    """{file: its part of the patch}, without the `index` lines (blob ids differ for the same change
    made on different commits)."""
    parts: dict[str, list[str]] = {}
    name = None
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            name = line.rsplit(" b/", 1)[-1]
            parts[name] = []
        elif name is not None and not line.startswith("index "):
            parts[name].append(line)
    return {name: "\n".join(lines) for name, lines in parts.items()}


def patch_differences(patch_a: str, patch_b: str) -> list[str]:
    """Which files the two runs' uncommitted changes touch differently."""
    files_a, files_b = patch_files(patch_a), patch_files(patch_b)
    lines = ["the uncommitted changes differ (code.patch):"]
    for label, names in (("changed differently", [f for f in files_a if f in files_b and files_a[f] != files_b[f]]),
                         ("changed in A only", [f for f in files_a if f not in files_b]),
                         ("changed in B only", [f for f in files_b if f not in files_a])):
        if names:
            lines.append(f"  {label}: {', '.join(names)}")
    return lines


def git_between(a: str, b: str, root: Path = provenance.CODE_ROOT) -> list[str]:
    """`git log` and `git diff --stat` between two commits in the checkout mimicry runs from, when it has both."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)

    try:
        missing = [c for c in (a, b) if git("cat-file", "-e", f"{c}^{{commit}}").returncode != 0]
    except (OSError, subprocess.TimeoutExpired):
        return ["(git is not available here to show the code difference)"]
    if missing:
        return [f"commit {c[:12]} is not in {root}: fetch it there to see the code difference" for c in missing]
    log = git("log", "--oneline", f"{a}..{b}").stdout.splitlines()
    back = git("log", "--oneline", f"{b}..{a}").stdout.splitlines()
    lines = [f"{len(log)} commit(s) in B that A does not have" + (f", {len(back)} in A that B does not" if back else "")]
    lines += ["  " + line for line in log[:10]] + (["  ..."] if len(log) > 10 else [])
    lines += ["git diff --stat A B:"] + ["  " + line for line in git("diff", "--stat", a, b).stdout.splitlines()]
    return lines


def code_differences(a: Run, b: Run, full: bool) -> dict[str, Any]:
    rec_a, rec_b = provenance.read(a.path), provenance.read(b.path)
    commit_a, commit_b = provenance.commit_of(rec_a), provenance.commit_of(rec_b)
    found: dict[str, Any] = {"a": code_line(rec_a), "b": code_line(rec_b), "details": []}
    if commit_a and commit_b and commit_a != commit_b:
        found["details"] += git_between(commit_a, commit_b)
    patch_a, patch_b = read_patch(a, rec_a), read_patch(b, rec_b)
    if patch_a or patch_b:
        if patch_a == patch_b:
            found["details"].append("the same uncommitted changes in both (code.patch)")
        else:
            found["details"] += patch_differences(patch_a, patch_b)
            if full:
                found["details"] += ["diff of the two code.patch files:", *difflib.unified_diff(
                    patch_a.splitlines(), patch_b.splitlines(), "A/code.patch", "B/code.patch", lineterm="", n=1)]
            else:
                found["details"].append("(--full shows the diff of the two code.patch files)")
    elif commit_a and commit_a == commit_b:
        found["details"].append("the same code: one commit, no uncommitted changes")
    found["versions"] = [(key, va, vb) for key, va, vb in _dict_differences(rec_a.get("versions"), rec_b.get("versions"))]
    found["machine"] = [(key, va, vb) for key, va, vb in _dict_differences(rec_a.get("machine"), rec_b.get("machine"))]
    return found


def _dict_differences(a: Any, b: Any) -> list[tuple[str, str, str]]:
    a, b = (a if isinstance(a, dict) else {}), (b if isinstance(b, dict) else {})
    if not a or not b:
        return []
    return [(k, json.dumps(a.get(k)) if k in a else ABSENT, json.dumps(b.get(k)) if k in b else ABSENT)
            for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]


# ------------------------------------------------------------------------------------------------
# metrics


def metric_rows(a: Run, b: Run) -> list[tuple[str, float | None, float | None, float | None, float | None]]:
    """(metric, A final, B final, A best, B best) for every metric either summary reports."""
    names = sorted({*a.summary.get("metrics", {}), *b.summary.get("metrics", {})})
    for run in (a, b):
        read_scalars(run, tags=set(names))
    rows = []
    for name in names:
        (fa, ba), (fb, bb) = final_and_best(a, name), final_and_best(b, name)
        rows.append((name, fa, fb, ba, bb))
    return rows


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


# ------------------------------------------------------------------------------------------------
# output


def render(a: Run, b: Run, config: list, code: dict, metrics: list, fmt: str, wrap: bool) -> str:
    if fmt == "json":
        return json.dumps({"a": str(a.path), "b": str(b.path),
                           "config": [dict(key=k, a=va, b=vb) for k, va, vb in config],
                           "code": {**code, "versions": [dict(key=k, a=va, b=vb) for k, va, vb in code["versions"]],
                                    "machine": [dict(key=k, a=va, b=vb) for k, va, vb in code["machine"]]},
                           "metrics": [dict(metric=m, a_final=fa, b_final=fb, a_best=ba, b_best=bb)
                                       for m, fa, fb, ba, bb in metrics]}, indent=2) + "\n"

    def table(header: list[str], cells: list[list[str]], title: str) -> str:
        if fmt == "md":
            return f"**{title}**\n\n" + render_markdown(header, cells) + "\n"
        return render_table(header, cells, title, wrap=wrap)

    parts = [f"A: {a.path}\nB: {b.path}\n\n"]
    if config:
        parts.append(table(["config", "A", "B"], [list(row) for row in config], f"config: {len(config)} difference(s)"))
    else:
        parts.append("config: the same\n\n")
    code_text = [f"code A: {code['a']}", f"code B: {code['b']}", *code["details"]]
    parts.append(("```\n" + "\n".join(code_text) + "\n```\n\n") if fmt == "md" else "\n".join(code_text) + "\n\n")
    for name in ("versions", "machine"):
        if code[name]:
            parts.append(table([name, "A", "B"], [list(row) for row in code[name]], f"{name} that differ"))
    if metrics:
        parts.append(table(["metric", "A final", "B final", "A best", "B best"],
                           [[m, *map(_fmt, values)] for m, *values in metrics], "metrics"))
    return "".join(parts)


def diff_command(argv: list[str]) -> int:
    args = parse_args(argv)
    a, b = open_run(args.run_a), open_run(args.run_b)
    for run in (a, b):
        for note in run.notes:
            print(f"note: {run.path}: {note}", file=sys.stderr)
    text = render(a, b, config_differences(a, b), code_differences(a, b, args.full), metric_rows(a, b),
                  args.format, wrap=sys.stdout.isatty() and not args.out)
    write_output(text, args.out)
    return 0
