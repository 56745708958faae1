"""``mimicry sample RUN_DIR|CKPT [n=8 seed=0 out=DIR ...]``: samples from a trained run, with no
access to its training data (everything needed travels in the checkpoint)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mimicry.checkpoints import find_checkpoint, load_task
from mimicry.config_checks import whole_at_least
from mimicry.errors import MimicryError
from mimicry.output_paths import ensure_writable_dir

COMMON_OPTIONS = {"n": 8, "seed": 0, "out": None}
#: sample options that count something, and the least each may be (null keeps the task's default)
COUNTS = {"n": 1, "seed": 0, "episodes": 1, "steps": 1, "length": 1, "interpolation_steps": 2, "video": 0, "top_k": 1,
          "pairs": 1}


def check_counts(settings: dict[str, Any]) -> None:
    """The same rule as the config's counts (mimicry/config_checks.py); only n and seed must be given."""
    for key, low in COUNTS.items():
        test, meaning = whole_at_least(low, nullable=key not in ("n", "seed"))
        if not test(settings.get(key)):
            raise MimicryError(f"{key}={settings.get(key)!r}: must be {meaning}, e.g. {key}={max(low, 1)}")


def parse_options(args: list[str]) -> tuple[str, dict[str, Any]]:
    """The first argument is the run; the rest are key=value (values parsed as YAML scalars,
    except ``prompt``, which stays text)."""
    if not args or ("=" in args[0] and not Path(args[0]).exists()):
        raise MimicryError("give a run directory or checkpoint first: mimicry sample RUN_DIR [n=8 seed=0 ...]")
    options: dict[str, Any] = {}
    for arg in args[1:]:
        if "=" not in arg:
            raise MimicryError(f"sample options are key=value; got {arg!r}")
        key, value = arg.split("=", 1)
        options[key] = value.encode().decode("unicode_escape") if key == "prompt" else yaml.safe_load(value)
    return args[0], options


def draw_samples(target: str | Path, options: dict[str, Any]) -> list[Path]:
    """Samples of a run directory or checkpoint, written under its samples/ (or ``out``); the files."""
    ckpt = find_checkpoint(target)
    task = load_task(ckpt)
    known = set(COMMON_OPTIONS) | set(getattr(task, "sample_options", ()))
    # dotted options belong to a known one (judge.temperature=0.1 goes with judge=)
    unknown = sorted(key for key in options if key not in known and key.split(".", 1)[0] not in known)
    if unknown:
        raise MimicryError(f"unknown sample option(s) {', '.join(unknown)} for {type(task).__name__}; "
                           f"valid: {', '.join(sorted(known))}")
    settings = {**COMMON_OPTIONS, **options}
    check_counts(settings)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out_dir = Path(settings.pop("out") or run_dir / "samples")
    ensure_writable_dir(out_dir, "out")
    if settings.get("record") is not None:  # an episode dataset is written there: the same check as out=
        ensure_writable_dir(Path(str(settings["record"])).expanduser().parent, "record",
                            fix="choose a writable place with record=DIR/episodes.npz")
    n, seed = settings.pop("n"), settings.pop("seed")
    return list(task.generate_samples(out_dir, n=n, seed=seed, **settings))


def sample_command(args: list[str]) -> int:
    for path in draw_samples(*parse_options(args)):
        if path.suffix == ".txt":
            print(path.read_text(encoding="utf-8"))
        print(f"wrote {path}")
    return 0
