"""The report's tables beyond the per-group summary: the ``--best-by`` choices and the
``--compare`` comparisons, in every output format (terminal, Markdown, CSV, JSON, HTML)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text

from ist_cli.report.labels import Labels

COMPARE_NOTE = ("difference = value − baseline of the chosen aggregate, 95% CI (mean: the t-test's; median, "
                "IQM: percentile bootstrap); test: paired t when runs pair by seed, else Welch's t, two-sided; "
                "p (Holm): Holm's correction over every comparison here; P(improvement): rliable's P(X > Y), "
                "ties count 1/2")


@dataclass
class ExtraTables:
    choices: list = field(default_factory=list)
    best_by: str = ""
    which: str = "final"
    comparisons: list = field(default_factory=list)
    factor: str = ""
    labels: Labels = field(default_factory=dict)

    def tables(self) -> list[tuple[str, str, list[str], list[list[str]], int]]:
        """(title, note, header, rows, number of key columns) of each table to show."""
        from ist_cli.report.compare import comparison_rows
        from ist_cli.report.render import format_metric
        from ist_cli.report.tuning import choice_rows

        out = []
        if self.choices:
            header, rows = choice_rows(self.choices, self.best_by, self.which)
            out.append((f"best {self.choices[0].key} per method, chosen on the mean {self.which} {self.best_by}",
                        "a winner on the edge of the grid may be beaten by a value outside it", header, rows,
                        len(header) - 2))
        if self.comparisons:
            header, rows = comparison_rows(self.comparisons, self.factor, format_metric)
            out.append((f"comparisons of {self.factor} against {self.comparisons[0].baseline}", COMPARE_NOTE,
                        header, rows, len(header) - 9))
        return out

    def rich_tables(self) -> list[Any]:
        renderables: list[Any] = []
        for title, note, header, rows, n_keys in self.tables():
            table = Table(title=title, title_style="bold", caption=note, caption_justify="left")
            for index, name in enumerate(header):
                table.add_column(name, style="cyan" if index < n_keys else None,
                                 justify="left" if index < n_keys + 2 else "right", overflow="fold")
            for row in rows:
                table.add_row(*(Text(cell) for cell in row))
            renderables.append(table)
        return renderables

    def markdown(self) -> str:
        parts = []
        for title, note, header, rows, _ in self.tables():
            parts += ["", f"_{title}_", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            parts += ["| " + " | ".join(row) + " |" for row in rows]
            parts += ["", f"_{note}_"]
        return "\n".join(parts) + ("\n" if parts else "")

    def csv(self) -> str:
        from ist_cli.report.compare import comparison_documents

        rows = comparison_documents(self.comparisons)
        buffer = io.StringIO()
        if rows:
            flat = [{**{f"context.{k}": v for k, v in row.pop("context").items()}, **row} for row in rows]
            writer = csv.DictWriter(buffer, fieldnames=list(flat[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in flat)
        return buffer.getvalue()

    def json(self, summary_json: str) -> str:
        """The summary document with ``best_by`` and ``comparisons`` added when asked for."""
        if not (self.choices or self.comparisons):
            return summary_json
        from ist_cli.report.compare import comparison_documents

        document = json.loads(summary_json)
        if self.choices:
            document["best_by"] = {
                "metric": self.best_by, "which": self.which,
                "choices": [{"context": c.context, "key": c.key, "winner": c.winner, "on_edge": c.on_edge,
                             "scores": c.scores} for c in self.choices]}
        if self.comparisons:
            document["comparisons"] = comparison_documents(self.comparisons)
        return json.dumps(document, indent=2, allow_nan=False)

    def html(self) -> str:
        from ist_cli.report.html import _e, _table

        parts = []
        for title, note, header, rows, n_keys in self.tables():
            parts.append(f"<h2>{_e(title[0].upper() + title[1:])}</h2>")
            parts.append(_table(header, rows, n_left=max(n_keys, 1)))
            parts.append(f'<p class="meta">{_e(note)}</p>')
        return "\n".join(parts)
