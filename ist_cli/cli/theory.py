"""``ist theory``: what Shulgin & Richtárik's theory predicts for one quadratic configuration
(docs/theory.md). The problem comes from the same options as ``ist run --model quadratic``,
from ``--problem-file``, or from a run file; the numbers from ``models.analysis``.
"""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np

from ist_cli.algorithms.plans import theory_covers
from ist_cli.cli import say
from ist_cli.cli.run import config_layers, with_run_options
from ist_cli.config import resolve_config, settings_from_config
from ist_cli.errors import UserError
from ist_cli.io.runfile import RunFileError, read_run
from ist_cli.models.analysis import Analysis, analyze, run_inputs
from ist_cli.models.quadratic import initial_point, problem_from_settings
from ist_cli.preflight import check_theory
from ist_cli.settings import QuadraticSettings

MAX_DIM = 2048  # E[B̄L̄B̄] costs O(n d³) and holds n d×d matrices: checked before anything is allocated
# settings that define the problem: a run file fixes them
PROBLEM_KEYS = ("workers", "dim", "heterogeneity", "interpolation", "client_samples", "l2", "problem_file")


def _from_run_file(path: str, layers: list[dict[str, Any]], sources: list[str], samples: int | None
                   ) -> tuple[QuadraticSettings, np.ndarray, np.ndarray, np.ndarray]:
    try:
        run = read_run(path, load_problem=True)
    except RunFileError as exc:
        raise UserError(f"{path!r} is not a readable run file ({exc})") from None
    except FileNotFoundError:
        raise UserError(f"{path!r} does not exist; expected an ist run file (.h5)") from None
    if not theory_covers(run.config):
        raise UserError(f"{path!r} is a {run.config.get('model')} run; ist theory covers the quadratic model only")
    for layer, source in zip(layers, sources, strict=True):
        for key in PROBLEM_KEYS:
            if key in layer:
                raise UserError(f"{source}: {key} cannot be changed for a run file (its problem is fixed); "
                                f"expected no {key} with {path!r}")
    config = resolve_config(run.config, *layers, sources=[f"run file {path}", *sources])
    check_theory(config, samples)
    settings = settings_from_config(config)
    return (settings, *run_inputs(settings, run.problem, run.params))


def _fmt(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.6g}" if not se else f"{value:.6g} ± {se:.2g}"


def _vector(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:limit])
    return f"[{shown}{', …' if len(values) > limit else ''}] (‖·‖ = {np.linalg.norm(values):.6g})"


def render(analysis: Analysis) -> str:
    """The human-readable report of ``ist theory``."""
    data = analysis.to_json()
    s = analysis.settings
    how = "exact (closed form)" if data["exact"] else f"Monte Carlo, {s['samples']} draws, ± 1 standard error"
    lines = [
        f"{s['algorithm']} · sketch {s['sketch']} (q = {s['q']}) · server update {s['server_update']} · "
        f"lr {s['lr']:g} · R = {s['local_steps']} · n = {s['workers']}, d = {s['dim']}",
        f"mean dynamics E[x^(k+1)] = P E[x^k] + c: {how}",
        f"  spectral radius ρ(P)            {_fmt(data['spectral_radius'], data['spectral_radius_se'])}"
        + ("  (the mean's error shrinks by ρ per round)" if data["converges"] else "  (>= 1: no limit)"),
    ]
    if data["converges"]:
        lines += [
            f"  x^∞ = (I − P)⁻¹ c               {_vector(analysis.x_limit)}",
            f"  ‖x^∞ − x*‖ (irreducible bias)   {_fmt(data['bias'], data.get('bias_se'))}",
            f"  ‖x*‖                            {np.linalg.norm(analysis.x_star):.6g}",
        ]
    dist = analysis.mean_dist_sq
    marks = sorted({k for k in (0, 1, 10, 100, len(dist) - 1) if k < len(dist)})
    lines.append("  ‖E[x^k] − x*‖²                  " + ", ".join(f"k={k}: {dist[k]:.4g}" for k in marks))
    t1, t2 = data.get("theorem1"), data.get("theorem2")
    if t1:
        lines += [
            "Theorem 1 (interpolation, b_i = 0)",
            f"  E[B̄]: max |E[B̄] − I|            {t1['mean_B_minus_I_max']:.3g}",
            f"  W̄ = ½E[L̄B̄ + B̄L̄]: λ_min        {t1['W_eigmin']:.6g} ({'PSD' if t1['W_psd'] else 'indefinite'})",
        ]
        if t1["theta"] is not None:
            lines += [
                f"  θ (smallest, E[B̄L̄B̄] ⪯ θW̄)     {t1['theta']:.6g}",
                f"  step-size bound 1/θ             {t1['step_bound']:.6g}",
                f"  λ_min(L̄^-½ W̄ L̄^-½)             {t1['mu']:.6g}",
                f"  rate 1 − γλ at lr {s['lr']:g}          {_fmt(t1['rate'])}",
            ]
        if t1["note"]:
            lines.append(f"  {t1['note']}")
    if t2:
        lines.append("Theorem 2 (heterogeneous, preconditioned Perm-1)")
        if t2["h"] is not None:
            lines += [
                f"  bias h = L̄⁻¹b̄ − (1/n)ΣE[C_i]b_i {_vector(np.asarray(t2['h']))}",
                f"  ‖h‖²_L̄                         {t2['h_norm_sq']:.6g}",
                f"  σ² = E‖g − Eg‖²_L̄              {t2['sigma_sq']:.6g}",
            ]
        if t2["neighbourhood"] is not None:
            lines += [
                f"  step-size range                 0 < γ ≤ (½ − β)/(β + ½); lr {s['lr']:g} allows β ≤ {t2['beta']:.4g}",
                f"  neighbourhood (2(1−γ)/β + γ)‖h‖²_L̄ + γσ²  {t2['neighbourhood']:.6g}",
            ]
        if t2["note"]:
            lines.append(f"  {t2['note']}")
    lines += [f"note: {note}" for note in data["notes"]]
    return "\n".join(lines)


@click.command(context_settings={"max_content_width": 110})
@click.argument("run_file", required=False, metavar="[RUN.h5]")
@with_run_options(model="quadratic", exclude=("model",))
@click.option("--config", "config_file", type=str, default=None, metavar="FILE.toml", help="Settings from a TOML file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting (repeatable).")
@click.option("--theory-samples", "samples", type=str, default=None, metavar="S",
              help="Estimate P and c by Monte Carlo over S sketch draws (needed for --local-steps > 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON on stdout.")
def theory_command(run_file: str | None, config_file: str | None, overrides: tuple[str, ...], samples: str | None,
                   as_json: bool, **flags: Any) -> None:
    """Print the theory of a quadratic configuration: ρ(P), x^∞ and the bias, the mean
    trajectory, and the quantities of Theorems 1 and 2. RUN.h5 takes the problem and settings of a run."""
    count = None
    if samples is not None:
        count = int(samples) if samples.strip().isascii() and samples.strip().isdigit() else 0
        if count < 2:
            raise UserError(f"--theory-samples: {samples!r} is not allowed; expected an integer >= 2")
    layers, sources = config_layers(config_file, overrides, flags)
    if run_file:
        settings, L, b, x0 = _from_run_file(run_file, layers, sources, count)
    else:
        config = resolve_config({"model": "quadratic"}, *layers, sources=["default", *sources])
        if not theory_covers(config):
            raise UserError(f"model {config['model']!r} is not allowed; ist theory covers the quadratic model only")
        if config["dim"] > MAX_DIM:
            raise UserError(f"--dim: {config['dim']} is too large for ist theory (O(n d³) work); "
                            f"expected at most {MAX_DIM}")
        check_theory(config, count)  # memory and work from the inputs, before the problem is made
        settings = settings_from_config(config)
        problem = problem_from_settings(settings)
        L, b, x0 = problem.L, problem.b, initial_point(settings.dim, settings.seed)
    if count is None and settings.local_steps > 1:
        raise UserError(f"--local-steps: {settings.local_steps} has no closed-form mean; "
                        "expected --theory-samples S (Monte Carlo over S sketch draws) or --local-steps 1")
    try:
        analysis = analyze(settings, L, b, x0, samples=count)
    except ValueError as exc:
        raise UserError(f"--sketch {settings.sketch}: {exc}") from None
    say(json.dumps(analysis.to_json(), allow_nan=False) if as_json else render(analysis))
