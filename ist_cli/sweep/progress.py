"""Sweep progress: one rich bar (runs done / total, elapsed, remaining) and, on a line of its
own cut to the terminal's width, the runs in flight on a terminal; one plain line per
finished run otherwise; nothing when quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from rich.console import RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from ist_cli.io.terminal import SafeConsole, printable, safe_text


class _BarWithFlight(Progress):
    """The bar line, then the in-flight runs on their own line: a long list is cut with "…"
    at the terminal's edge instead of pushing the bar, counts and times off the line."""

    flight = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.flight:
            yield safe_text(self.flight, no_wrap=True, overflow="ellipsis", style="dim")


class SweepProgress:
    """Tracks finished and in-flight runs; chooses its style from the output stream."""

    def __init__(self, total: int, done: int, label: str, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = done
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.console = SafeConsole(file=self.stream)
        self.flight: dict[str, str] = {}
        self._bar: _BarWithFlight | None = None
        self._task = None

    def __enter__(self) -> SweepProgress:
        if not self.quiet and self.console.is_terminal:
            self._bar = _BarWithFlight(
                TextColumn("[bold]{task.description}",
                           table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1, min_width=6)),
                BarColumn(bar_width=24), MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(),
                TextColumn("remaining"), TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.done)
        return self

    def _refresh(self) -> None:
        if self._bar is not None:
            running = list(self.flight.values())
            self._bar.flight = f"running ({len(running)}): {', '.join(running)}" if running else ""
            self._bar.update(self._task, completed=self.done)

    def started(self, run_id: str, label: str) -> None:
        self.flight[run_id] = label
        if self._bar is None and not self.quiet:
            print(printable(f"{self.label}: start {label}"), file=self.stream, flush=True)
        self._refresh()

    def finished(self, run_id: str, label: str, status: str, detail: str = "") -> None:
        self.flight.pop(run_id, None)
        self.done += 1
        line = f"[{self.done}/{self.total}] {label}: {status}{(' ' + detail) if detail else ''}"
        if self._bar is not None:
            self._bar.console.print(line, highlight=False)
        elif not self.quiet:
            print(printable(f"{self.label}: {line}"), file=self.stream, flush=True)
        self._refresh()

    def dropped(self, run_id: str) -> None:
        """A run left the flight without finishing (interrupted)."""
        self.flight.pop(run_id, None)
        self._refresh()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
