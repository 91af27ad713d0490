"""python -m worker: serve one worker under gunicorn, settings from the environment."""
import logging

from common.config import WorkerSettings
from common.serve import serve
from common.wire import DATA_PORT_OFFSET

from .app import create_app, serve_data_plane

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = WorkerSettings.from_env()

    def app_with_data_plane():
        app = create_app(settings)
        serve_data_plane(app.extensions["worker_state"], settings.host, settings.port + DATA_PORT_OFFSET)
        return app

    serve(app_with_data_plane, settings.host, settings.port)
