"""What a benchmark hands back, and how it is shown: rich tables, JSON, markdown.

A :class:`BenchResult` carries tables of already-formatted measured numbers,
the targets it was checked against (:class:`Check`) and the raw figures for
JSON.  Nothing here computes or invents a number; it only lays them out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table as RichTable

__all__ = [
    "DOCS_BEGIN",
    "DOCS_END",
    "BenchResult",
    "Check",
    "Table",
    "fmt",
    "fmt_ratio",
    "markdown_table",
    "print_checks",
    "print_result",
    "render_markdown",
    "rich_table",
    "update_docs",
]

DOCS_BEGIN = "<!-- bench:results:begin (written by `make bench`; edits inside are lost) -->"
DOCS_END = "<!-- bench:results:end -->"


@dataclass(frozen=True, slots=True)
class Table:
    """One printed table: a title, column names, rows of text, an optional note."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    note: str = ""
    #: leading columns of text (left-aligned); the others hold numbers
    text_columns: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [list(row) for row in self.rows],
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Check:
    """A target from the issue, and whether this run's measurement met it."""

    benchmark: str
    target: str
    measured: str
    met: bool | None  # None: a figure the issue asks for, with no target to meet

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "target": self.target,
            "measured": self.measured,
            "met": self.met,
        }


@dataclass(slots=True)
class BenchResult:
    """Everything one benchmark measured."""

    key: str
    title: str
    summary: str
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "summary": self.summary,
            "seconds": round(self.seconds, 1),
            "checks": [c.as_dict() for c in self.checks],
            "tables": [t.as_dict() for t in self.tables],
            "data": self.data,
        }


def fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    """A measured number for a table; '-' when there is none."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def rich_table(table: Table) -> RichTable:
    """A table for the terminal (``Table.note`` as its caption; numbers right-aligned)."""
    rich_table = RichTable(
        title=table.title,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        caption=table.note or None,
        caption_justify="left",
    )
    for index, column in enumerate(table.columns):
        rich_table.add_column(
            column,
            justify="left" if index < table.text_columns else "right",
            overflow="fold",
            no_wrap=index == 0,
        )
    for row in table.rows:
        rich_table.add_row(*row)
    return rich_table


def print_result(console: Console, result: BenchResult) -> None:
    console.rule(f"[bold]{result.title}[/] ({result.seconds:.0f} s)")
    console.print(result.summary, highlight=False)
    for table in result.tables:
        console.print(rich_table(table))


def _check_table(checks: Sequence[Check]) -> Table:
    rows = [
        [c.benchmark, c.target, c.measured, "yes" if c.met else "no" if c.met is not None else "-"]
        for c in checks
    ]
    return Table("Targets", ["benchmark", "target", "measured", "met"], rows, text_columns=4)


def print_checks(console: Console, checks: Sequence[Check]) -> None:
    if checks:
        console.rule("[bold]Targets[/]")
        console.print(rich_table(_check_table(checks)))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(table: Table) -> str:
    lines = [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(_cell(c) for c in table.columns) + " |")
    lines.append(
        "|"
        + "|".join(":---" if i < table.text_columns else "---:" for i in range(len(table.columns)))
        + "|"
    )
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def render_markdown(
    header: Sequence[str], results: Sequence[BenchResult], checks: Sequence[Check]
) -> str:
    """The generated block of docs/benchmarks.md: machine, targets, every table."""
    parts = [*header, "", markdown_table(_check_table(checks))]
    for result in results:
        parts += ["", f"### {result.title}", "", result.summary]
        parts += ["\n" + markdown_table(table) for table in result.tables]
    return "\n".join(parts).strip() + "\n"


_BLOCK = re.compile(re.escape(DOCS_BEGIN) + r".*?" + re.escape(DOCS_END), re.DOTALL)


def update_docs(path: Path, block: str) -> None:
    """Replace the generated block of ``path`` (between the markers); append it if absent."""
    generated = f"{DOCS_BEGIN}\n{block}{DOCS_END}"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if _BLOCK.search(text):
        text = _BLOCK.sub(lambda _: generated, text, count=1)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + generated + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
