"""python -m worker: serve one worker under gunicorn, settings from the environment."""
import logging

from common.config import WorkerSettings
from common.serve import serve
from common.transport import data_port

from .app import create_app, serve_data_plane

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = WorkerSettings.from_env()
    if not settings.secret.configured:
        logging.getLogger("worker").warning("no CLUSTER_SECRET or CLUSTER_SECRET_FILE: any peer may use this worker")

    def app_with_data_plane():
        app = create_app(settings)
        serve_data_plane(app.extensions["worker_state"], data_port(settings.port))
        return app

    serve(app_with_data_plane, settings.host, settings.port)
