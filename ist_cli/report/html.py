"""One self-contained HTML report: tables, figures as inline base64 PNG, each group's
config and the provenance. No external links, scripts or fonts, so it opens offline and
can be mailed or archived with a paper."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ist_cli._version import __version__
from ist_cli.errors import UserError
from ist_cli.io.atomic import write_text_atomic
from ist_cli.io.names import utc_now
from ist_cli.io.outputs import make_dir
from ist_cli.io.runfile import RunData
from ist_cli.report.figures import png_bytes
from ist_cli.report.load import Skipped
from ist_cli.report.render import display_rows, title
from ist_cli.report.stats import BOOTSTRAP_SEED, N_RESAMPLES, GroupSummary
from ist_cli.report.table import show

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f3f5f8}td.k,th.k{text-align:left}tr:nth-child(even) td{background:#fafbfc}
.meta{color:#666;font-size:.9em}.figs{display:flex;flex-wrap:wrap;gap:12px}
.figs figure{margin:0;flex:0 1 calc(50% - 6px);min-width:420px}.figs img{width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}code{background:#f3f3f3;padding:0 .25em}
details{margin:.3em 0}summary{cursor:pointer}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], n_left: int = 1) -> str:
    head = "".join(f'<th class="{"k" if i < n_left else ""}">{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"k" if i < n_left else ""}">{_e(c)}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def provenance_rows(runs: Sequence[RunData]) -> list[list[str]]:
    """key → every distinct value over the runs: ist version, git commit, then /env entries."""
    seen: dict[str, list[str]] = {}

    def add(key: str, value: Any) -> None:
        text = show(value)
        seen.setdefault(key, [])
        if text not in seen[key]:
            seen[key].append(text)

    for run in runs:
        add("ist_version", run.attrs.get("ist_version", "-"))
        add("git_commit", run.attrs.get("git_commit", "-"))
        for key, value in sorted(_flatten(run.env).items()):
            add(key, value)
    return [[key, "; ".join(values)] for key, values in seen.items()]


def build_html(
    summaries: Sequence[GroupSummary],
    figures: Mapping[str, Figure],
    runs: Sequence[RunData],
    skipped: Sequence[Skipped] = (),
    *,
    x: str = "round",
    sources: Sequence[str] = (),
) -> str:
    """The report as one HTML string."""
    now = utc_now()
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>ist report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>ist report</h1>",
        f'<p class="meta">{len(runs)} runs in {len(summaries)} groups from {_e(", ".join(sources) or "-")}'
        f" · generated {now} by ist {__version__} · CI: {N_RESAMPLES} percentile-bootstrap resamples of the"
        f" mean, seed {BOOTSTRAP_SEED}</p>",
        "<h2>Summary</h2>", f"<p class=\"meta\">{_e(title(summaries))}</p>",
    ]
    header, rows = display_rows(summaries)
    n_keys = len(summaries[0].group.key) if summaries else 0
    parts.append(_table(header, rows, n_left=max(n_keys, 1)))
    if figures:
        parts.append(f"<h2>Figures</h2><p class=\"meta\">x axis of the curves: {_e(x)}; line = mean over the"
                     " group's runs, band = 95% bootstrap CI, dashed = theory ‖x^∞−x*‖², dotted = ‖E[x^k]−x*‖² (the exact mean trajectory, a lower bound by Jensen; docs/theory.md).</p>")
        parts.append('<div class="figs">')
        for name, fig in figures.items():
            data = base64.b64encode(png_bytes(fig)).decode()
            parts.append(f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{_e(name)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("<h2>Groups</h2>")
    for s in summaries:
        group = s.group
        parts.append(f"<h3>{_e(group.label)}</h3>")
        parts.append(f'<p class="meta">{s.runs} runs, seeds {_e(", ".join(show(v) for v in group.seeds))}</p>')
        config_rows = [[k, show(v)] for k, v in sorted(group.config.items())]
        parts.append("<details open><summary>config</summary>" + _table(["key", "value"], config_rows, 2) + "</details>")
        file_rows = [[str(run.path), run.run_id, run.status] for run in group.runs]
        parts.append("<details><summary>files</summary>" + _table(["file", "run id", "status"], file_rows, 3)
                     + "</details>")
    if skipped:
        parts.append("<h2>Skipped files</h2>")
        parts.append(_table(["file", "why"], [[str(s.path), s.reason] for s in skipped], 2))
    parts.append("<h2>Provenance</h2>")
    parts.append(_table(["item", "value(s) over the runs"], provenance_rows(runs), 2))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(path: str | Path, text: str) -> Path:
    """Write atomically: a reader never sees a half-written report."""
    path = Path(path)
    make_dir(path.parent, "--html")
    try:
        return write_text_atomic(path, text)
    except OSError as exc:
        raise UserError(f"--html: {str(path)!r} cannot be written ({exc.strerror}); expected a writable file path") from None
