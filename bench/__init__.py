"""The benchmark suite: `python -m bench` (see docs/performance.md, which it writes)."""
