"""The HTML report as a person sees it: headless Chromium at 1400 px, no horizontal overflow.

Skipped where Chromium is absent (``.ci/run`` installs the Debian package, so CI runs it).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ist
from tests.test_report_support import known_metrics, write_run

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                "(apt-get install chromium; .ci/run installs it)")
WIDTH = 1400
MEASURE = """<script>window.addEventListener('load', () => {
  const e = document.documentElement;
  document.body.setAttribute('data-measure', JSON.stringify({scroll: e.scrollWidth, client: e.clientWidth}));
});</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a fresh profile, no network, no first-run work."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
         f"--window-size={WIDTH},1200", "--virtual-time-budget=5000", *args],
        capture_output=True, text=True, timeout=120,
    )


def overflow(page: Path, tmp_path: Path) -> dict[str, int]:
    """scrollWidth and clientWidth of the page, measured by the browser after load (on a copy
    with a measuring script: the report itself has none)."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    result = chromium(tmp_path, "--dump-dom", probe.as_uri())
    match = re.search(r'data-measure="([^"]+)"', result.stdout)
    assert match, result.stderr[-2000:]
    return json.loads(html.unescape(match.group(1)))


@pytest.fixture(scope="module")
def wide_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models, many varying keys and metrics, and a value with no space to wrap at
    (``hidden`` of 40 layers): a summary table far wider than 1400 px."""
    results = tmp_path_factory.mktemp("results")
    for lr in (0.01, 0.02):
        for sketch in ("perm", "rand"):
            for seed in (0, 1):
                write_run(results, seed=seed, lr=lr, sketch=sketch, local_steps=1 + seed % 2, l2=0.1 + lr,
                          client_samples=16 + seed, heterogeneity="homogeneous" if seed else "heterogeneous")
    metrics = {**known_metrics("ist", 0), "test_accuracy": np.linspace(0.1, 0.97, 21),
               "test_loss": np.linspace(2.0, 0.1, 21), "train_accuracy": np.linspace(0.1, 0.99, 21)}
    for algorithm, width in (("ist", 64), ("dp", 128)):  # 40 hidden layers: a key value with no space to wrap at
        for seed in (0, 1):
            write_run(results, model="mlp", algorithm=algorithm, seed=seed, metrics=metrics, hidden=[width] * 40)
    return results


@pytest.mark.slow
def test_html_report_of_both_models_has_no_horizontal_overflow_at_1400_px(wide_results: Path,
                                                                            tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    metrics = [arg for m in ("loss", "f_gap", "dist_to_opt_sq", "grad_norm_sq", "bytes", "test_accuracy",
                             "test_loss", "train_accuracy", "compute_time", "sim_time") for arg in ("--metric", m)]
    result = ist("report", str(wide_results), "--html", str(page), "--format", "csv", *metrics)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split(",")
    assert len(header) > 40  # the table really is wide
    sizes = overflow(page, tmp_path)
    assert sizes["client"] == WIDTH
    assert sizes["scroll"] <= sizes["client"], sizes
    shot = tmp_path / "report.png"
    result = chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), result.stderr[-2000:]
    image = Image.open(shot)
    assert image.size[0] == WIDTH
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 10.0  # a page was drawn, not a blank screen
