"""How estimates and p-values are printed in reports and summaries.

- :func:`interval`: ``0.912 [0.905, 0.918]``. The ends are rounded *outwards* (low down, high up) so the
  printed interval always contains the computed one: an interval [0.99963, 1] prints as
  ``1.000 [0.999, 1.000]``, never as a zero-width ``1.000 [1.000, 1.000]`` or a "within ±0.0005" that
  hides which side is open. Only an interval that really has zero width says so (``(zero-width CI)``);
  the toolkit's proportion intervals never do (``interp.proportions``).
- :func:`bound`: a certified bound printed on its safe side — a lower bound rounded down, an upper bound
  up — so the printed digits never claim more than was proven; :func:`bounds` prints ``[lower, upper]``
  (or one number when they are equal);
- :func:`p_value`: two significant digits, and ``< 1e-16`` at or below 1e-16 (``interp.paired.P_FLOOR``),
  where a p-value computed in double precision (as 1 − a CDF, or a normal tail) is no longer resolved;
  stored p-values are floored there, never 0.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

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


def bound(value: float | None, side: str, digits: int = 6) -> str:
    """``value`` at ``digits`` decimals rounded towards its safe side: ``side`` "lower" rounds down
    (floor), "upper" rounds up (ceiling); exact decimal arithmetic on the float's binary value."""
    if not _finite(value):
        return "n/a"
    if side not in ("lower", "upper"):
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    rounding = ROUND_FLOOR if side == "lower" else ROUND_CEILING
    return f"{Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=rounding):f}"


def share(count: int, total: int, side: str, digits: int = 4) -> str:
    """The exact ratio ``count / total`` of two integers at ``digits`` decimals, rounded down (``side``
    "lower") or up ("upper") in integer arithmetic: 998/1000 at 2 decimals is 0.99 / 1.00 ... and at 3
    decimals 0.998 either way (a float division would give 0.99799… first)."""
    if side not in ("lower", "upper"):
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    scale = 10**digits
    scaled = -((-count * scale) // total) if side == "upper" else (count * scale) // total
    whole, frac = divmod(scaled, scale)
    return f"{whole}.{frac:0{digits}d}" if digits else str(whole)


def bounds(lower: float | None, upper: float | None, digits: int = 6) -> str:
    """``[lower, upper]`` (each on its safe side, :func:`bound`), or ``x (exact)`` when they are equal."""
    if _finite(lower) and lower == upper:
        return f"{lower!r} (exact)"
    return f"[{bound(lower, 'lower', digits)}, {bound(upper, 'upper', digits)}]"
