"""rates-serve: run the API under gunicorn with the settings from the environment.

gunicorn's own signals apply: SIGTERM stops gracefully (requests in flight
finish, for up to the graceful timeout), SIGHUP reloads: new workers start
with the code on disk, then the old ones finish their requests and exit, so
an upgrade loses no request.
"""

from __future__ import annotations

import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from rates import settings as settings_module
from rates.settings import Settings, SettingsError


class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type information
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self._settings
        options: dict[str, Any] = {
            "bind": [f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}"],
            "workers": s.workers,
            # Threads let one worker overlap database round trips and keep
            # client connections alive; sync workers close every connection.
            "worker_class": "gthread",
            "threads": s.threads,
            "graceful_timeout": 30,
            "timeout": 30,
            "keepalive": 5,
            "accesslog": "-" if s.access_log else None,
            "errorlog": "-",
            "proc_name": "rates",
            # The app is imported in each worker after the fork, so a reload
            # (SIGHUP) picks up new code and no connection crosses a fork.
            "preload_app": False,
            # Bounded request line and headers: a request that asks for too
            # much is refused by gunicorn before any code of ours runs.
            "limit_request_line": 4094,
            "limit_request_fields": 50,
            "limit_request_field_size": 8190,
        }
        # gunicorn 24+ opens a control socket under $HOME by default: a
        # management interface the service does not use, and a write outside
        # the sandbox a systemd unit allows. Older releases lack the setting.
        if "control_socket_disable" in self.cfg.settings:
            options["control_socket_disable"] = True
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Imported here, in the worker, so that a reload (SIGHUP) loads new code.
        from rates.app import create_app

        return create_app(self._settings)


def main() -> None:
    if len(sys.argv) > 1:
        print(
            "rates-serve: takes no arguments; configure it with the RATES_* and PG* "
            "variables (see .env.example)",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        settings = settings_module.load()
    except SettingsError as exc:
        print(f"rates-serve: {exc}", file=sys.stderr)
        sys.exit(2)
    print(
        f"rates-serve: listening on http://{settings.host}:{settings.port} "
        f"({settings.workers} workers x {settings.threads} threads)",
        file=sys.stderr,
        flush=True,
    )
    _Gunicorn(settings).run()


if __name__ == "__main__":
    main()
