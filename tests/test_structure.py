"""Imports go one way: commands (cli, training, ...) → tasks → parts (models, losses, data, metrics,
rewards). Checked on the source, every import counted (inside functions and TYPE_CHECKING too)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mimicry"
PARTS = ("mimicry.models", "mimicry.losses", "mimicry.data", "mimicry.metrics", "mimicry.rewards", "mimicry.diffusion")
TASKS = ("mimicry.tasks",)
# What runs tasks: every module that is neither a part, a task, nor one of the shared services below.
SERVICES = ("mimicry.errors", "mimicry.recipe", "mimicry.checkpoints", "mimicry.lightning_internals",
            "mimicry.run_reading", "mimicry.run_record", "mimicry.output_paths", "mimicry.config_checks", "mimicry.trackers")


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    modules = module_names()

    def known(target: str) -> str:
        while target not in modules and "." in target:
            target = target.rsplit(".", 1)[0]
        return target if target in modules else ""

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mimicry"):
                found |= {known(f"{node.module}.{alias.name}") for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {known(alias.name) for alias in node.names if alias.name.startswith("mimicry")}
        graph[name] = found - {"", name}
    return graph


def layer(module: str) -> str:
    if module.startswith(PARTS):
        return "parts"
    if module.startswith(TASKS):
        return "tasks"
    if module.startswith(SERVICES):
        return "services"
    return "commands"


def test_parts_and_tasks_never_import_what_runs_them():
    allowed = {"parts": {"parts", "services"}, "tasks": {"tasks", "parts", "services"},
               "services": {"services"}, "commands": {"commands", "tasks", "parts", "services"}}
    wrong = [f"{a} → {b}" for a, deps in import_graph().items() for b in deps
             if layer(b) not in allowed[layer(a)] and not (a == "mimicry.checkpoints" and b == "mimicry.tasks.base")]
    # checkpoints names the task base class to check what a file asks to build: the one loader that must
    assert wrong == []


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    cycles = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append(" → ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                walk(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_the_checks_see_a_wrong_import(tmp_path, monkeypatch):
    """Negative control: a part importing a task, and two modules importing each other, are caught."""
    fake = tmp_path / "mimicry"
    for path in PACKAGE.rglob("*.py"):
        target = fake / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    def append(name: str, line: str) -> None:
        (fake / "models" / name).write_text((fake / "models" / name).read_text() + f"\n{line}\n")
    append("gpt.py", "from mimicry.tasks.lm import LanguageModeling")
    append("gpt.py", "from mimicry.models.ngram import NGramTable")
    append("ngram.py", "from mimicry.models import gpt")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    graph = import_graph()
    assert "mimicry.tasks.lm" in graph["mimicry.models.gpt"]
    try:
        test_parts_and_tasks_never_import_what_runs_them()
    except AssertionError as caught:
        assert "mimicry.models.gpt → mimicry.tasks.lm" in str(caught)
    else:
        raise AssertionError("a part importing a task went unnoticed")
    try:
        test_no_import_cycles()
    except AssertionError as caught:
        assert "mimicry.models.gpt → mimicry.models.ngram → mimicry.models.gpt" in str(caught)
    else:
        raise AssertionError("an import cycle went unnoticed")
