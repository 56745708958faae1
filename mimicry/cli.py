"""The `mimicry` command: train | sample | eval | list | compare | probe | runs | diff | tb.

`mimicry train` is a Hydra app, so every Hydra feature works (`-m` sweeps, `--cfg job`, `--help`).
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mimicry.errors import MimicryError
from mimicry.output_paths import ensure_writable_dir
from mimicry.provenance import COMMAND_ENV
from mimicry.run_reading import override_key, read_summary_file, read_yaml
from mimicry.saved_overrides import CARRIED_BY_CHECKPOINT, vet_overrides

USAGE = """usage: mimicry <command> [options]

commands:
  train [overrides]            train a task (Hydra app: `mimicry train --help` lists every option)
                               e.g. mimicry train task=lm trainer.max_epochs=5
                                    mimicry train -m task=gan loss=ns,hinge
                                    mimicry train resume=RUN_DIR     (continue a killed run)
                                    mimicry train task=lm init_from=RUN_DIR data=text data.path=FILE
  sample RUN_DIR|CKPT [k=v...]  draw samples from a trained run (n=, seed=, out=, and the task's own
                               options, e.g. prompt= temperature= top_k= top_p= length= for lm;
                               pairs=N judge=REWARD [judge.temperature=0.1]: preference pairs, as JSON lines)
  eval RUN_DIR [n=1000 seed=0] image metrics of a finished image run (FID, precision/recall, coverage, copies)
  list                         tasks, models, losses and data options, and which go together
  compare PATH... [--metric M] [--group-by KEY] [--format table|md|csv] [--plot FILE] [--x step|wall|TAG]
          [--samples FILE]     runs side by side: differing hyperparameters, final/best metrics, curves,
                               the last sample grids
  probe NAME RUN_DIR [k=v...]  look inside a trained run: sharpness, layers, embeddings (`mimicry probe --help`)
  runs [PATH] [--task T] [--status S] [--since 2d] [--sort COL] [--format table|md|csv|json]
                               every run below PATH (default outputs/), newest first; outputs/latest is the newest
  diff RUN_A RUN_B             what differs between two runs: config, code (commits, patches), versions, metrics
  tb PATH... [--port N] [--host H] [--print-only]
                               TensorBoard on exactly those runs, named by their differing hyperparameters
"""

COMMANDS = ("train", "sample", "eval", "list", "compare", "probe", "runs", "diff", "tb")


def _register_resolvers() -> None:
    """Resolvers used by conf/train.yaml to name run and sweep-job directories. Registered when
    this module is imported, so Hydra's launcher workers (which import it) have them too."""
    from mimicry.sweeps import job_name, run_id

    if not OmegaConf.has_resolver("uid"):  # two runs started in the same second still differ
        OmegaConf.register_new_resolver("uid", run_id)
    if not OmegaConf.has_resolver("dirname"):  # overrides as a short, path-safe name
        OmegaConf.register_new_resolver(
            "dirname", lambda text: ("_" + str(text).replace("/", "-")[:80]) if text else "")
    if not OmegaConf.has_resolver("sweep_name"):  # only the overrides that vary between jobs
        OmegaConf.register_new_resolver("sweep_name", job_name)


_register_resolvers()
_job_summaries: list[dict] = []  # what each job of this command run in this process ended with


@hydra.main(version_base="1.3", config_path="pkg://mimicry.conf", config_name="train")
def _hydra_train(cfg: DictConfig) -> float | None:
    from mimicry.sweeps import monitored_value
    from mimicry.training import run  # imported here so that `mimicry --help` stays fast

    summary = run(cfg)
    _job_summaries.append(summary)
    if summary["status"] != "completed":
        return None  # a hyperparameter search counts this trial as failed
    return monitored_value(summary, cfg.get("monitor"))  # what a hyperparameter search optimizes


#: overrides whose value is a run folder (its name holds `=` and `,`); data.path is quoted when it has an `=`
#: (a file inside a run folder, e.g. the pairs `mimicry sample RUN pairs=N` writes to RUN/samples/)
RUN_PATH_KEYS = ("resume", "init_from", "reward.from_run", "reward.run", "tokenizer.from_run", "latent.from_run")
# the config groups a user may turn off with GROUP=null (the others have no run without a choice)
CONFIG_GROUPS = ("logger", "experiment", "hparams_search")


def _quote(value: str) -> str:
    return value if value[:1] in "'\"" else f"'{value}'"



def prepare_train_args(args: list[str]) -> list[str]:
    """Quote path-valued overrides (run directories contain `=` and `,`), and turn `resume=DIR`
    into the run's own overrides (checked: mimicry/saved_overrides.py) + the new ones +
    `hydra.run.dir=DIR` (`resume_sweep=DIR`: the sweep's overrides into its own folder)."""
    args = [f"{override_key(a)}={_quote(a.split('=', 1)[1])}" if "=" in a and (override_key(a) in RUN_PATH_KEYS or (
            override_key(a) == "data.path" and "=" in a.split("=", 1)[1])) else a for a in args]  # (a.txt,b.txt sweeps)
    args = [f"~{a.split('=', 1)[0]}" if a.split("=", 1)[0] in CONFIG_GROUPS and a.split("=", 1)[1] in ("null", "none")
            else a for a in args]  # `logger=null`: Hydra drops a group's choice only when written `~logger`
    sweep = [a for a in args if override_key(a) == "resume_sweep" and a.split("=", 1)[1] not in ("true", "false")]
    if sweep:
        from mimicry.sweeps import resume_sweep_args

        new = [a for a in args if override_key(a) != "resume_sweep" and a not in ("-m", "--multirun")]
        return resume_sweep_args(sweep[-1].split("=", 1)[1], new)
    resume = [a for a in args if override_key(a) == "resume"]
    if not resume:
        return args
    run_dir = Path(resume[-1].split("=", 1)[1].strip("'\"")).expanduser().resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise MimicryError(f"resume={run_dir}: not a mimicry run directory (no .hydra/overrides.yaml there)")
    new = [a for a in args if override_key(a) != "resume"]
    typed_tasks = [a.split("=", 1)[1] for a in new if override_key(a) == "task"]
    run_task = read_summary_file(run_dir / "summary.json")[0].get("task")
    if typed_tasks and run_task and typed_tasks[-1] != run_task:
        raise MimicryError(f"resume={run_dir} is a {run_task} run: it cannot continue as task={typed_tasks[-1]}; "
                           f"drop task= (a resumed run keeps its task)")
    previous = vet_overrides(read_yaml(saved), saved, f"mimicry train resume={run_dir}", typed=new,
                             drop={override_key(a) for a in new} | {"resume"}, carried=CARRIED_BY_CHECKPOINT)
    return previous + new + [f"resume={_quote(str(run_dir))}", f"hydra.run.dir={_quote(str(run_dir))}"]


def _complete_after_train() -> None:
    """Hydra's tab completion reads the typed line: drop the word `train` so it sees only overrides."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split(" ", 2)
    if len(words) >= 2 and words[1] == "train":
        shorter = " ".join([words[0], *words[2:]])
        os.environ["COMP_POINT"] = str(max(0, int(os.environ.get("COMP_POINT", len(line))) - (len(line) - len(shorter))))
        os.environ["COMP_LINE"] = shorter


INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
              "--resolve", "--package", "-p")


def shows_only(args: list[str]) -> bool:
    """`--help`, `--cfg job`, ...: Hydra prints something and runs no job."""
    return any(a.split("=", 1)[0] in INFO_FLAGS for a in args)


def check_output_folder(args: list[str]) -> None:
    """Hydra creates the run (or sweep) directory and fails with a traceback where it cannot:
    check the folder the user chose, or ./outputs, first."""
    if shows_only(args):
        return  # nothing is written
    from mimicry.sweeps import is_sweep

    key = "hydra.sweep.dir" if is_sweep(args) else "hydra.run.dir"
    chosen = [a.split("=", 1)[1].strip("'\"") for a in args if a.split("=", 1)[0] == key]
    folder = chosen[-1].split("${", 1)[0] if chosen else "outputs"  # up to the first interpolation
    ensure_writable_dir(Path(folder or "."), key)


def run_train(args: list[str]) -> tuple[list[dict], Path | None]:
    """`mimicry train ARGS`: the summaries of the jobs run in this process, and the sweep folder (None
    for a single run). Jobs that a launcher ran in other processes are in the sweep folder."""
    from mimicry.sweeps import is_sweep, prepare_sweep, run_id

    _complete_after_train()
    _job_summaries.clear()  # one command's jobs: called again in the same process (tests, a notebook), it starts clean
    run_id()  # fixed now, so that every process this command starts names folders alike
    args = prepare_train_args(args)
    sweep_dir = None
    if is_sweep(args) and not shows_only(args):
        args, sweep_dir = prepare_sweep(args)
    check_output_folder(args)
    sys.argv = [sys.argv[0], *args]
    _hydra_train()
    return list(_job_summaries), sweep_dir


def train(args: list[str]) -> int:
    """Exit status 1 when any job did not complete (in a sweep: any job in its folder, wherever it ran)."""
    summaries, sweep_dir = run_train(args)
    if sweep_dir is not None:  # the sweep table reads every job's folder, so it covers the jobs run here too
        from mimicry.sweeps import print_sweep_table

        summaries = print_sweep_table(sweep_dir)
    return 1 if any(summary["status"] != "completed" for summary in summaries) else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS and ("=" in command or command.startswith("-")):
        command, rest = "train", args  # Lightning's DDP re-launch calls us with overrides only
    try:
        if command == "train":
            if "LOCAL_RANK" not in os.environ:  # the command as typed, for provenance.json; a DDP rank keeps rank 0's
                os.environ[COMMAND_ENV] = shlex.join(["mimicry", *args])
            return train(rest)
        if command == "sample":
            from mimicry.sampling import sample_command
            return sample_command(rest)
        if command == "eval":
            from mimicry.evaluate import eval_command
            return eval_command(rest)
        if command == "list":
            from mimicry.catalog import print_catalog
            return print_catalog()
        if command == "compare":
            from mimicry.comparison import compare_command
            return compare_command(rest)
        if command == "probe":
            from mimicry.probes import probe_command
            return probe_command(rest)
        if command == "runs":
            from mimicry.run_list import runs_command
            return runs_command(rest)
        if command == "diff":
            from mimicry.run_diff import diff_command
            return diff_command(rest)
        if command == "tb":
            from mimicry.tensorboard_launch import tb_command
            return tb_command(rest)
    except MimicryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"error: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}\n\n{USAGE}", file=sys.stderr)
    return 2


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
