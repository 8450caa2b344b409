"""Numbers as a reader wants them: bytes in kB/MB/GB, seconds in s/min/h, link rates in
Mbit/s/Gbit/s, plain tick labels.

Decimal prefixes (1 kB = 1000 B), as network rates are quoted. An axis picks one unit for all
its ticks (from its largest tick), so ticks compare at a glance; its label then names the
unit. Tick formatters never produce an offset or a ``×10^k`` multiplier.
"""

from __future__ import annotations

import math

from ist_cli.io.metric_info import METRICS

BYTE_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B"))
TIME_UNITS = ((3600.0, "h"), (60.0, "min"), (1.0, "s"))
RATE_UNITS = ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s"), (1.0, "bit/s"))
UNIT_TABLES = {"byte": BYTE_UNITS, "s": TIME_UNITS, "bit/s": RATE_UNITS}


def unit_of(name: str) -> str:
    """``byte``, ``s`` or ``1`` for a metric or derived series (bytes: ``byte``)."""
    if name in ("bytes", "time"):
        return "byte" if name == "bytes" else "s"
    if name in METRICS:
        return METRICS[name].units
    return "1"


def scale_for(value: float, unit: str) -> tuple[float, str]:
    """(divisor, symbol) of the largest unit not above ``value`` (bytes, seconds or bit/s)."""
    table = UNIT_TABLES[unit]
    magnitude = abs(value) if math.isfinite(value) else 0.0
    for divisor, symbol in table:
        if magnitude >= divisor:
            return divisor, symbol
    return table[-1]


def plain(value: float, digits: int = 4) -> str:
    """A number without exponent where it stays short (0.001, 12.5, 3000), else ``1e-07``."""
    if not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    if "e" in text and 1e-4 <= abs(value) < 1e7:
        decimals = max(digits - int(math.floor(math.log10(abs(value)))) - 1, 0)
        rounded = float(f"{value:.{digits}g}")  # keep only the significant digits
        text = f"{rounded:.{decimals}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
    return text


def human(value: float, unit: str, digits: int = 3) -> str:
    """``137.6 MB``, ``2.5 min``, ``1 Gbit/s``; a plain number for a unit without prefixes."""
    if unit not in UNIT_TABLES or not math.isfinite(value):
        return plain(value, digits + 1)
    divisor, symbol = scale_for(value, unit)
    return f"{plain(value / divisor, digits)} {symbol}"


def _decade_locator(log_locator: type, base: float):
    """A base-10 log locator with 1-2-5 ticks on an axis spanning under 1.5 decades, 1-3 under
    2.5 and decades only beyond (so labels never collide); other bases: powers only."""

    class DecadeLocator(log_locator):
        def tick_values(self, vmin: float, vmax: float):
            if base == 10.0 and vmin > 0 and vmax > 0:
                span = abs(math.log10(vmax / vmin))
                self.set_params(subs=(1.0, 2.0, 5.0) if span < 1.5 else (1.0, 3.0) if span < 2.5 else (1.0,))
            return super().tick_values(vmin, vmax)

    return DecadeLocator(base=base, subs=(1.0,))


def format_axis(axis, unit: str, *, integer: bool = False, base: float = 10.0) -> None:
    """Tick labels of ``axis`` (an x or y ``Axis``): human units for bytes and seconds, plain
    numbers otherwise, integer ticks for counts on a linear scale; never an offset text."""
    from matplotlib.ticker import (  # only when drawing
        FuncFormatter,
        LogLocator,
        MaxNLocator,
        NullFormatter,
    )

    log = axis.get_scale() == "log"
    if integer and not log:
        axis.set_major_locator(MaxNLocator(integer=True, nbins="auto"))
    if log:
        axis.set_major_locator(_decade_locator(LogLocator, base))
        axis.set_minor_formatter(NullFormatter())  # minor labels of a log axis collide
    if unit in UNIT_TABLES:
        def label(value: float, _pos: int) -> str:
            low, high = axis.get_view_interval()
            divisor, symbol = scale_for(max(abs(low), abs(high)) if not log else value, unit)
            return f"{plain(value / divisor, 3)} {symbol}" if value else "0"
    else:
        def label(value: float, _pos: int) -> str:
            return plain(value, 4)
    axis.set_major_formatter(FuncFormatter(label))
