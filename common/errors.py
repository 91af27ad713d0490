"""One JSON error shape for every service: {"error": {"message": ...}}."""
from __future__ import annotations

from flask import jsonify


def error_response(status: int, message: str, **extra):
    body = {"error": {"message": message, **extra}}
    return jsonify(body), status
