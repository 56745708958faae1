"""Does the suite notice when nothing learns? Runs the tests with every torch optimizer's `step`
turned into a no-op (it still calls the closure, so forward and backward run as usual) in every
Python process of the run, subprocesses included, and reports per model family which tests fail.
A family with no failing test is one whose learning no test checks.

The patch is a `sitecustomize.py` in a temporary folder put first on PYTHONPATH: Python imports it
at start-up in the pytest process, its xdist workers and every `mimicry` subprocess a test starts.
It replaces `torch.optim.Optimizer.__init__` so that each new optimizer gets a no-op bound `step`
of its own (an instance attribute wins over each subclass's wrapped class `step`, and LR
schedulers wrap the instance's `step` in turn). Before the suite, a probe checks that the patch
really freezes weights (Adam, AdamW, SGD; a Lightning fit) and that they move without it.

    python scripts/check_learning_tests.py                       # the whole suite, 2 workers
    python scripts/check_learning_tests.py tests/test_learning.py   # only some tests (pytest args)

→ scripts/results/check_learning_tests.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "scripts" / "results" / "check_learning_tests.json"

SITECUSTOMIZE = '''
import os
if os.environ.get("MIMICRY_FREEZE_OPTIMIZERS") == "1":
    import types
    import torch
    import torch.optim

    def _frozen_step(self, closure=None, *args, **kwargs):
        """No update: the closure (forward + backward) still runs, as Lightning expects."""
        if closure is not None:
            with torch.enable_grad():
                return closure()
        return None

    _original_init = torch.optim.Optimizer.__init__

    def _init_then_freeze(self, *args, **kwargs):
        _original_init(self, *args, **kwargs)
        self.step = types.MethodType(_frozen_step, self)

    torch.optim.Optimizer.__init__ = _init_then_freeze
'''

PROBE = r'''
import torch, pytorch_lightning as pl
torch.manual_seed(0)
moved = {}
for name, make in {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW, "SGD": torch.optim.SGD}.items():
    net = torch.nn.Linear(3, 1)
    before = net.weight.detach().clone()
    opt = make(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    net(torch.randn(8, 3)).pow(2).mean().backward()
    opt.step(); sched.step()
    moved[name] = not torch.equal(before, net.weight)

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__(); self.net = torch.nn.Linear(3, 1)
    def training_step(self, batch, _):
        return self.net(batch).pow(2).mean()
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)

tiny = Tiny(); before = tiny.net.weight.detach().clone()
pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
           enable_model_summary=False).fit(tiny, torch.utils.data.DataLoader(torch.randn(12, 3), batch_size=4))
moved["lightning"] = not torch.equal(before, tiny.net.weight)
print("MOVED", sorted(k for k, v in moved.items() if v))
print("FROZEN", sorted(k for k, v in moved.items() if not v))
'''

# A test belongs to the first family whose pattern matches its node id (file::name[params]).
FAMILIES = [
    ("rl_text", r"test_rl_text|rl_text"),
    ("decision_transformer", r"decision_transformer|key_to_door|_dt_"),
    ("filtered_bc", r"filtered_bc|_bc_"),
    ("dqn", r"dqn"),
    ("ppo", r"ppo|door_key"),
    ("diffusion", r"diffusion"),
    ("gan", r"gan"),
    ("image_ar", r"image_ar"),
    ("lm", r"test_lm|lm_|_lm|gpt"),
]
REQUIRED = [name for name, _ in FAMILIES]


def family(nodeid: str) -> str:
    return next((name for name, pattern in FAMILIES if re.search(pattern, nodeid)), "other")


def probe(env: dict) -> dict[str, list[str]]:
    """Which optimizers moved weights under `env` (the patch on or off)."""
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"the probe failed:\n{result.stderr[-3000:]}")
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("MOVED", "FROZEN")))
    return {key.lower(): json.loads(value.replace("'", '"')) for key, value in lines.items()}


def outcomes(junit: Path) -> dict[str, str]:
    """nodeid → passed | failed | skipped, from pytest's JUnit XML."""
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        nodeid = f"{path}.py::{case.get('name')}"
        tags = {child.tag for child in case}
        found[nodeid] = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pytest_args", nargs="*", default=["tests"], help="what pytest runs (default: tests)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="frozen-optimizers-") as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(SITECUSTOMIZE)
        base = {**os.environ, "OMP_NUM_THREADS": "1"}
        frozen = {**base, "MIMICRY_FREEZE_OPTIMIZERS": "1",
                  "PYTHONPATH": os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")]))}
        unpatched, patched = probe(base), probe(frozen)
        print(f"probe without the patch, moved: {unpatched['moved']}; with it, moved: {patched['moved']}")
        if patched["moved"] or unpatched["frozen"]:
            raise SystemExit("the patch does not freeze every optimizer (or weights do not move without it)")

        junit = Path(tmp) / "junit.xml"
        started = time.perf_counter()
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                   *(["-n", str(args.workers)] if args.workers > 1 else ["-p", "no:xdist"]), *args.pytest_args]
        subprocess.run(command, cwd=REPO, env=frozen)
        wall = time.perf_counter() - started
        found = outcomes(junit)

    per_family: dict[str, dict] = {}
    for nodeid, outcome in sorted(found.items()):
        entry = per_family.setdefault(family(nodeid), {"failed": [], "passed": 0, "skipped": 0})
        if outcome == "failed":
            entry["failed"].append(nodeid)
        else:
            entry[outcome] += 1
    missing = [name for name in REQUIRED if not per_family.get(name, {}).get("failed")]
    total_failed = sum(len(e["failed"]) for e in per_family.values())

    print(f"\nwith every optimizer step a no-op: {total_failed} of {len(found)} tests fail ({wall:.0f} s)")
    print(f"{'family':22s} {'failed':>6s} {'passed':>6s} {'skipped':>7s}")
    for name in [*REQUIRED, *sorted(set(per_family) - set(REQUIRED))]:
        entry = per_family.get(name, {"failed": [], "passed": 0, "skipped": 0})
        print(f"{name:22s} {len(entry['failed']):6d} {entry['passed']:6d} {entry['skipped']:7d}")
    print("families with no failing test:", ", ".join(missing) or "none")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "what": "tests run with every torch optimizer's step a no-op (scripts/check_learning_tests.py)",
        "pytest_args": args.pytest_args, "workers": args.workers, "wall_s": round(wall, 1),
        "probe": {"without_patch": unpatched, "with_patch": patched},
        "tests": len(found), "failed": total_failed, "families_without_a_failing_test": missing,
        "per_family": {name: {**entry, "failed_count": len(entry["failed"])} for name, entry in per_family.items()},
    }, indent=2))
    print(f"→ {RESULTS.relative_to(REPO)}")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
