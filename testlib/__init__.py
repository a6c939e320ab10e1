"""Helpers shared by the tests and the benchmarks (the repository's root is on sys.path:
pytest's `pythonpath`, and `python -m bench` runs from there)."""

from pathlib import Path

# The checkout: the tests and benchmarks read its files (nix/, db/, the stack's files).
ROOT = Path(__file__).resolve().parents[1]
