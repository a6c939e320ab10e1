"""The SQL files of db/, wherever the package runs from."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def sql_file(name: str) -> str:
    """The text of db/<name>."""
    # A built package (wheel, Nix store) carries db/ as rates/db (see
    # pyproject.toml); in the source tree (editable install, the dev shell)
    # db/ is beside rates/.
    packaged = _HERE / "db"
    directory = packaged if packaged.is_dir() else _HERE.parent / "db"
    return (directory / name).read_text(encoding="utf-8")
