"""python -m worker: serve one worker under gunicorn, settings from the environment."""
import logging

from common.config import WorkerSettings
from common.serve import serve

from .app import create_app

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = WorkerSettings.from_env()
    serve(lambda: create_app(settings), settings.host, settings.port)
