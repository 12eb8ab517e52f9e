"""Floats that qdrant-edge keeps exactly.

qdrant-edge-py 0.9 stores a payload as JSON and reads it back with serde_json's default
float parser, which is not correctly rounded: some full-precision floats (computed values
such as `0.1 * 14 + 0.2`, float32 values widened to float64) come back one unit in the last
place off, and its payload index and filters see that other value too. Every float with
at most 15 significant digits survives. `storable` finds a float the engine keeps as the
one given (the float itself, or a neighbour that the parser rounds onto it), so that what
is written reads back and filters exactly; where none exists the store refuses the value.
"""

from __future__ import annotations

import math
from decimal import Decimal

POW10 = tuple(float(f"1e{i}") for i in range(309))
"""serde_json's table of powers of ten."""
NEIGHBOURS = 4
"""How many floats either side to try as a preimage."""


def _shortest_parts(x: float) -> tuple[int, int]:
    """(digits, exponent) of x's shortest round-trip decimal, x > 0, no trailing zeros: what
    serde_json writes (ryu) and Python's repr both produce."""
    _sign, digits, exponent = Decimal(repr(x)).as_tuple()
    text = "".join(map(str, digits))
    stripped = text.rstrip("0")
    return int(stripped), int(exponent) + len(text) - len(stripped)


def _from_parts(significand: int, exponent: int) -> float:
    """serde_json's `f64_from_parts`: the significand as a float, times or divided by the
    power of ten (in steps of 1e308 past the table)."""
    f = float(significand)
    while abs(exponent) > 308:
        if f == 0.0:
            return f
        f /= 1e308
        exponent += 308
    return f * POW10[exponent] if exponent >= 0 else f / POW10[-exponent]


def kept(x: float) -> float:
    """The float the engine holds after storing x."""
    if x == 0.0 or not math.isfinite(x):
        return x
    digits, exponent = _shortest_parts(abs(x))
    if exponent >= 0 and len(str(digits)) + exponent <= 16:
        value = _from_parts(digits * 10 ** (exponent + 1), -1)  # written as "1234000.0"
    else:
        value = _from_parts(digits, exponent)
    return math.copysign(value, x)


def storable(x: float) -> float | None:
    """A float that the engine keeps as exactly x, or None where there is none."""
    if kept(x) == x:
        return x
    below = above = x
    for _ in range(NEIGHBOURS):
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
        for candidate in (below, above):
            if kept(candidate) == x:
                return candidate
    return None
