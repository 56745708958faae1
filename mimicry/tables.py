"""Tables for the terminal, markdown and files: what `mimicry compare`, `runs` and `diff` print."""
from __future__ import annotations

import io
import sys
from pathlib import Path

from mimicry.errors import MimicryError


def render_table(header: list[str], cells: list[list[str]], title: str, wrap: bool) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in header:
        numeric = column in ("n", "steps", "wall s") or column.endswith((" final", " best"))
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for line in cells:
        table.add_row(*line)
    console = Console(file=io.StringIO(), width=None if wrap else 10_000)
    console.print(table)
    return console.file.getvalue()


def render_markdown(header: list[str], cells: list[list[str]]) -> str:
    def line(items: list[str]) -> str:
        return "| " + " | ".join(item.replace("|", "\\|") for item in items) + " |"
    return "\n".join([line(header), line(["---"] * len(header)), *map(line, cells)]) + "\n"


def write_output(text: str, out: str | None) -> None:
    """Print ``text``, or write it to ``out`` (saying so on stderr: stdout stays the table alone)."""
    if not out:
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text)
    except OSError as error:
        raise MimicryError(f"--out {out}: cannot write there ({error.strerror})") from error
    print(f"wrote {out}", file=sys.stderr)
