"""Triton's --metrics-config summary_quantiles: its spelling and its defaults."""

from __future__ import annotations

#: Triton's default quantiles, each with its allowed rank error.
DEFAULT_QUANTILES = "0.5:0.05,0.9:0.01,0.95:0.001,0.99:0.001,0.999:0.001"


def parse_quantiles(text: str) -> tuple[tuple[float, float], ...]:
    """`q:e,q:e,...` as Triton's summary_quantiles -> pairs; ValueError names a bad one."""
    pairs = []
    for item in text.split(","):
        quantile, colon, error = item.strip().partition(":")
        try:
            q, e = float(quantile), float(error)
        except ValueError:
            raise ValueError(f"summary_quantiles: {item.strip()!r} is not "
                             "<quantile>:<error>") from None
        if not colon or not 0 <= q <= 1 or not 0 <= e <= 1:
            raise ValueError(f"summary_quantiles: {item.strip()!r}: quantile and error are "
                             "numbers in [0, 1]")
        pairs.append((q, e))
    return tuple(pairs)
