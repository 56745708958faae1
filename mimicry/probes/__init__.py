"""``mimicry probe NAME RUN_DIR [k=v ...]``: look inside a trained run without training it.

Each probe is one module here with ``SUMMARY`` (one line for the help) and ``main(run, options)``;
the registry below is all that cli.py knows of them. Probes read runs only through
mimicry/checkpoints.py (safe loading) and write under ``RUN_DIR/probes/`` and the run's TensorBoard.
"""
from __future__ import annotations

import importlib

from mimicry.errors import MimicryError

#: probe name → module under mimicry.probes
PROBES = {
    "sharpness": "mimicry.probes.sharpness",
    "layers": "mimicry.probes.layers",
    "embeddings": "mimicry.probes.embeddings",
    "codebook": "mimicry.probes.codebook",
}


def usage() -> str:
    lines = ["usage: mimicry probe NAME RUN_DIR [checkpoint=best|last] [data.root=DIR] [key=value ...]", "", "probes:"]
    for name, module in PROBES.items():
        lines.append(f"  {name:<11} {importlib.import_module(module).SUMMARY}")
    return "\n".join(lines)


def probe_command(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in PROBES:
        raise MimicryError(f"unknown probe {name!r}; choose one of: {', '.join(PROBES)} (mimicry probe --help)")
    from mimicry.probes.common import open_run, parse_options
    from mimicry.recipe import typed_data_values

    module = importlib.import_module(PROBES[name])
    if rest and rest[0] in ("-h", "--help"):
        print(f"mimicry probe {name} RUN_DIR [key=value ...]: {module.SUMMARY}\noptions (defaults): "
              + ", ".join(f"{k}={v}" for k, v in module.OPTIONS.items()))
        return 0
    chosen = [a.split("=", 1)[1] for a in rest if a.startswith("checkpoint=")]  # every probe takes it
    rest, typed = typed_data_values([a for a in rest if not a.startswith("checkpoint=")])  # data.root=DIR
    run_dir, options = parse_options(rest, module.OPTIONS, name)
    return module.main(open_run(run_dir, chosen[-1] if chosen else "best", typed), options)
