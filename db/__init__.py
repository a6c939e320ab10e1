"""SQL shipped inside the rates package as `rates.db` (see pyproject.toml)."""
