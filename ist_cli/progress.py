"""Live progress of a run: start-up stages from the first second (loading data, kernels,
starting workers), then a rich bar on a terminal or plain lines otherwise; nothing when quiet."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.status import Status
from rich.table import Column, Table

from ist_cli.io.terminal import SafeConsole

WIDE_TERMINAL = 120


class RunProgress:
    """Reports rounds as they finish; chooses its style from the output stream."""

    def __init__(self, total_rounds: int, label: str, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total = total_rounds
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.console = SafeConsole(file=self.stream)
        self._bar: Progress | None = None
        self._task = None
        self._last_line = 0.0
        self._first: tuple[float, int] | None = None
        self._created = time.perf_counter()
        self._status: Status | None = None

    def stage(self, text: str) -> None:
        """Show what start-up is doing (``NAME: loading data (0.4s)``) on a terminal.

        A transient status line: it is replaced by the bar, and erased by ``end_stage`` when
        start-up fails, so a bad input still leaves exactly one line on stderr. Nothing is
        printed off a terminal (logs get the per-round lines).
        """
        if self.quiet or not self.console.is_terminal:
            return
        line = f"{self.label}: {text} (since {time.perf_counter() - self._created:.1f} s)"
        if self._status is None:
            self._status = self.console.status(line)
            self._status.start()
        else:
            self._status.update(line)

    def announce(self, text: str) -> None:
        """Say what a long start-up stage is doing on any output: the spinning status line on a
        terminal, one plain line otherwise (CI logs, batch jobs), so a first run that compiles
        is not silent. Call it once the input has been checked: a bad input must still leave
        exactly one line on stderr."""
        if self.quiet:
            return
        if self.console.is_terminal:
            self.stage(text)
            return
        print(f"{self.label}: {text}", file=self.stream, flush=True)

    def end_stage(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __enter__(self) -> RunProgress:
        self.end_stage()
        if not self.quiet and self.console.is_terminal:
            # bar, round count, loss and both labelled times always fit: on a terminal narrower
            # than WIDE_TERMINAL the run's name goes on its own line above the bar
            fixed = {"table_column": Column(no_wrap=True)}
            columns = [
                BarColumn(bar_width=16),
                TextColumn("round {task.completed}/{task.total}", **fixed),
                TextColumn("{task.fields[loss]}", **fixed),
                TextColumn("elapsed", **fixed),
                TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)),
                TextColumn("remaining", **fixed),
                TimeRemainingColumn(table_column=Column(no_wrap=True, min_width=7)),
            ]
            if self.console.width >= WIDE_TERMINAL:
                columns.insert(0, TextColumn("[bold]{task.description}", **fixed))
            else:
                self.console.print(self.label, style="bold", highlight=False)
            self._bar = Progress(
                *columns,
                console=self.console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, loss="")
        return self

    def update(self, round_index: int, metrics: Mapping[str, float] | None) -> None:
        if self.quiet:
            return
        loss = f"loss {metrics['loss']:.4g}" if metrics else None
        if self._bar is not None:
            fields = {"loss": loss} if loss else {}
            self._bar.update(self._task, completed=round_index, **fields)
            return
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, round_index)  # start-up is behind us: measure the rate from here
        if metrics and (now - self._last_line >= 1.0 or round_index == self.total):
            self._last_line = now
            since, first_round = self._first
            done = round_index - first_round
            elapsed = f" elapsed {now - self._created:.0f}s"
            eta = f" remaining ~{(self.total - round_index) * (now - since) / done:.0f}s" if done > 0 else ""
            print(f"{self.label}: round {round_index}/{self.total} {loss}{elapsed}{eta}", file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def print_summary(summary: Mapping[str, Any], stream: TextIO) -> None:
    """The end-of-run table."""
    table = Table(title=f"{summary['name']} ({summary['status']})", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key == "name":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
        table.add_row(key, _fmt(value))
    SafeConsole(file=stream).print(table)
