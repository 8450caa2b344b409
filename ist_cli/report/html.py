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
from ist_cli.report.figures import figure_caption, png_bytes
from ist_cli.report.labels import plural
from ist_cli.report.load import Skipped
from ist_cli.report.render import display_rows, title
from ist_cli.report.sections import Section
from ist_cli.report.stats import BOOTSTRAP_SEED, CI_NAMES, DEFAULT_CI, N_RESAMPLES
from ist_cli.report.table import show

# figures are shown at this many CSS px per inch of paper size: 7-pt legend text reads as ~14 px
CSS_PX_PER_INCH = 150

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}h3{font-size:1.05em;margin-bottom:.3em}h4{font-size:.95em;margin:.8em 0 .2em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;vertical-align:top;overflow-wrap:anywhere;
white-space:pre-line}th{overflow-wrap:normal}
th{background:#f3f5f8}td.k,th.k{text-align:left}tr:nth-child(even) td{background:#fafbfc}
.meta{color:#666;font-size:.9em}.figs{display:flex;flex-wrap:wrap;gap:12px}
.figs figure{margin:0;max-width:100%}.figs img{max-width:100%;height:auto;border:1px solid #eee}
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
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


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


def _figure(name: str, fig: Figure, ci: str, caption: str | None = None) -> str:
    """A figure at paper scale with its caption (by default what line and band are)."""
    data = base64.b64encode(png_bytes(fig)).decode()
    width = round(fig.get_size_inches()[0] * CSS_PX_PER_INCH)
    text = figure_caption(fig, name, ci) if caption is None else caption
    return (f'<figure style="width:{width}px"><img alt="{_e(name)}" width="{width}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{_e(name)}</b>: {_e(text)}</figcaption></figure>")


def page_figures(figures: Mapping[str, Figure], x: str) -> dict[str, Figure]:
    """The figures a page shows: the grid of every metric (one shared legend) in place of the
    single-metric figures it repeats; ``--figures`` still writes them all."""
    if f"curves_vs_{x}" not in figures:
        return dict(figures)
    return {name: fig for name, fig in figures.items()
            if name == f"curves_vs_{x}" or not name.endswith(f"_vs_{x}")}


def _ci_sentence(ci: str) -> str:
    if ci == "t":
        return "CI: Student-t interval of the mean (t quantile with n−1 degrees of freedom)"
    return f"CI: {CI_NAMES[ci]}, {N_RESAMPLES} resamples of the mean, seed {BOOTSTRAP_SEED}"


def build_html(
    sections: Sequence[Section],
    runs: Sequence[RunData],
    skipped: Sequence[Skipped] = (),
    *,
    x: str = "round",
    sources: Sequence[str] = (),
    extra_html: str = "",
) -> str:
    """The report as one HTML string: one section per model, then skipped files and provenance."""
    now = utc_now()
    ci = sections[0].summaries[0].ci if sections and sections[0].summaries else DEFAULT_CI
    n_groups = sum(len(section.groups) for section in sections)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>ist report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>ist report</h1>",
        f'<p class="meta">{plural(len(runs), "run")} of {plural(len(sections), "model")} in '
        f'{plural(n_groups, "group")} from'
        f' {_e(", ".join(sources) or "-")} · generated {now} by ist {__version__} · {_e(_ci_sentence(ci))}</p>',
    ]
    if extra_html:
        parts.append(extra_html)
    for section in sections:
        parts.append(f"<h2>Model: {_e(section.model)} ({plural(len(section.runs), 'run')})</h2>")
        summaries = section.summaries
        parts.append(f"<p class=\"meta\">{_e(title(summaries))}</p>")
        header, rows = display_rows(summaries)
        rows = [[cell.replace(" (n = ", "\n(n = ") for cell in row] for row in rows]  # the note on its own line
        n_keys = len(summaries[0].group.key) if summaries else 0
        parts.append(_table(header, rows, n_left=max(n_keys, 1)))
        if section.figures:
            parts.append(f"<h3>Figures</h3><p class=\"meta\">x axis of the curves: {_e(x)}</p>")
            parts.append('<div class="figs">')
            parts.extend(_figure(name, fig, ci) for name, fig in page_figures(section.figures, x).items())
            parts.append("</div>")
        parts.append("<h3>Groups</h3>")
        for s in summaries:
            group = s.group
            parts.append(f"<h4>{_e(group.label)}</h4>")
            parts.append(f'<p class="meta">{plural(s.runs, "run")}, seeds {_e(", ".join(show(v) for v in group.seeds))}</p>')
            config_rows = [[k, show(v)] for k, v in sorted(group.config.items())]
            parts.append("<details><summary>config</summary>" + _table(["key", "value"], config_rows, 2)
                         + "</details>")
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
