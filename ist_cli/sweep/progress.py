"""Sweep progress: one rich bar (runs done / total, ETA) and the runs in flight on a
terminal; one plain line per finished run otherwise; nothing when quiet."""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class SweepProgress:
    """Tracks finished and in-flight runs; chooses its style from the output stream."""

    def __init__(self, total: int, done: int, label: str, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = done
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.console = Console(file=self.stream)
        self.flight: dict[str, str] = {}
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> SweepProgress:
        if not self.quiet and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                TextColumn("{task.fields[flight]}"), console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.done, flight="")
        return self

    def _refresh(self) -> None:
        if self._bar is not None:
            shown = ", ".join(list(self.flight.values())[:4])
            more = f" +{len(self.flight) - 4}" if len(self.flight) > 4 else ""
            self._bar.update(self._task, completed=self.done, flight=f"running: {shown}{more}" if shown else "")

    def started(self, run_id: str, label: str) -> None:
        self.flight[run_id] = label
        if self._bar is None and not self.quiet:
            print(f"{self.label}: start {label}", file=self.stream, flush=True)
        self._refresh()

    def finished(self, run_id: str, label: str, status: str, detail: str = "") -> None:
        self.flight.pop(run_id, None)
        self.done += 1
        line = f"[{self.done}/{self.total}] {label}: {status}{(' ' + detail) if detail else ''}"
        if self._bar is not None:
            self._bar.console.print(line, highlight=False)
        elif not self.quiet:
            print(f"{self.label}: {line}", file=self.stream, flush=True)
        self._refresh()

    def dropped(self, run_id: str) -> None:
        """A run left the flight without finishing (interrupted)."""
        self.flight.pop(run_id, None)
        self._refresh()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
