"""The root's control requests to its workers (HTTP): health, load, release; the secret on every one."""
from __future__ import annotations

import threading

import requests

from common.auth import SecretSource
from common.protocol import LoadAssignment, ProtocolError, WorkerHealth


class ControlError(RuntimeError):
    """A control request that failed: unreachable, refused or answered with nonsense."""


class ControlClient:
    def __init__(self, secret: SecretSource):
        self.secret = secret
        self._local = threading.local()  # requests.Session is not safe to share between threads

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def health(self, url: str, timeout: float = 2) -> WorkerHealth:
        try:
            body = self._session().get(url + "/healthz", headers=self.secret.headers(), timeout=timeout).json()
            return WorkerHealth.from_dict(body)
        except (requests.RequestException, ValueError) as exc:  # ValueError: not JSON, or ProtocolError
            raise ControlError(f"unreachable: {type(exc).__name__}" if isinstance(exc, requests.RequestException)
                               else f"bad health report: {exc}") from None

    def load(self, url: str, assignment: LoadAssignment, timeout: float = 5) -> None:
        try:
            resp = self._session().post(url + "/v1/load", json=assignment.to_dict(), headers=self.secret.headers(),
                                        timeout=timeout)
        except requests.RequestException as exc:
            raise ControlError(f"unreachable: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise ControlError(error_message(resp))

    def release(self, url: str, request_id: str) -> None:
        """Best effort: a down worker holds no cache anyway."""
        try:
            self._session().post(url + "/v1/release", json={"request_id": request_id},
                                 headers=self.secret.headers(), timeout=2)
        except requests.RequestException:
            pass


def error_message(resp: requests.Response) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}"


__all__ = ["ControlClient", "ControlError", "ProtocolError", "error_message"]
