"""Figures from measured values."""

__all__ = ["percentile", "p99"]


def percentile(values, q):
    """The q-th percentile (0..100) by the nearest-rank method: a value that was observed."""
    v = sorted(values)
    if not v:
        raise ValueError("no values")
    k = max(0, min(len(v) - 1, -(-len(v) * q // 100) - 1))
    return v[int(k)]


def p99(values):
    """The 99th percentile by the nearest-rank method."""
    return percentile(values, 99)
