"""Run a Flask app under gunicorn: one process (the state lives in it), many threads."""
from __future__ import annotations

from gunicorn.app.base import BaseApplication


class _App(BaseApplication):
    def __init__(self, app_factory, options):
        self.app_factory, self.options = app_factory, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Called in the forked server process: background threads must start here, not before the fork.
        return self.app_factory()


def serve(app_factory, host: str, port: int, threads: int = 32) -> None:
    # One worker process: KV caches, in-flight requests and samplers are in-process state.
    _App(app_factory, {"bind": f"{host}:{port}", "workers": 1, "worker_class": "gthread", "threads": threads,
               "timeout": 120, "graceful_timeout": 5, "accesslog": None, "loglevel": "warning"}).run()
