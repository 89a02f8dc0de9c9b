"""How estimates and p-values are printed in reports and summaries.

- :func:`interval`: ``0.912 [0.905, 0.918]``. The ends are rounded *outwards* (low down, high up) so the
  printed interval always contains the computed one: an interval [0.99963, 1] prints as
  ``1.000 [0.999, 1.000]``, never as a zero-width ``1.000 [1.000, 1.000]`` or a "within ±0.0005" that
  hides which side is open. Only an interval that really has zero width says so (``(zero-width CI)``);
  the toolkit's proportion intervals never do (``interp.proportions``).
- :func:`p_value`: two significant digits, and ``< 1e-16`` at or below 1e-16 (``interp.paired.P_FLOOR``),
  where a p-value computed in double precision (as 1 − a CDF, or a normal tail) is no longer resolved;
  stored p-values are floored there, never 0.
"""

from __future__ import annotations

import math

from interp.paired import P_FLOOR  # noqa: F401  (re-exported: reports read numbers.P_FLOOR)


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def interval(
    mean: float | None, low: float | None, high: float | None, digits: int = 3, pct: bool = False
) -> str:
    """``mean [low, high]`` at ``digits`` decimals (percent with ``pct``); see the module docstring."""
    if not _finite(mean):
        return "n/a"
    scale, unit = (100.0, "%") if pct else (1.0, "")

    def text(x: float) -> str:
        return f"{x * scale:.{digits}f}{unit}"

    if not (_finite(low) and _finite(high)):
        return f"{text(mean)} (no CI)"
    if low == high:
        return f"{text(mean)} (zero-width CI)"
    step = 10.0 ** (digits + (2 if pct else 0))
    # Outward rounding; the 1e-9 keeps float noise (0.9 * 1000 = 899.9999…) from moving an exact end.
    down = math.floor(low * step + 1e-9) / step
    up = math.ceil(high * step - 1e-9) / step
    return f"{text(mean)} [{text(down)}, {text(up)}]"


def p_value(p: float | None) -> str:
    """``0.032``, ``4.1e-09``, ``< 1e-16`` (also for p = 0), ``n/a``."""
    if not _finite(p):
        return "n/a"
    return "< 1e-16" if p <= P_FLOOR else f"{p:.2g}"
