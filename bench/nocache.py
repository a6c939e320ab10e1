"""rates-serve without its answer cache: the same gunicorn options, for the with/without figures."""

from __future__ import annotations

from typing import Any

from rates import serve, settings


class _NoCache(serve._Gunicorn):
    def load(self) -> Any:
        from rates.app import create_app

        return create_app(self._settings, cache=False)


if __name__ == "__main__":
    _NoCache(settings.load()).run()
