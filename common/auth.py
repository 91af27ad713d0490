"""The cluster's shared secret: only the root and its workers may use a worker's control and data ports.

Where it comes from (common/config.py reads the settings):
- CLUSTER_SECRET: the secret itself (the local cluster generates one per run);
- CLUSTER_SECRET_FILE: a file holding it: a Docker secret on a swarm (/run/secrets/cluster_secret),
  or, in compose, a file the root generates on a volume the workers mount read-only. A worker whose
  file is not there yet refuses everything until it appears.
- neither: open (tests of one process, tools); the worker logs a warning.
"""
from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path

log = logging.getLogger("auth")
HEADER = "X-Cluster-Secret"


class SecretSource:
    def __init__(self, value: str = "", file: str = ""):
        self._value = value.strip().encode() or None
        self.file = file

    @property
    def configured(self) -> bool:
        return self._value is not None or bool(self.file)

    def current(self) -> bytes | None:
        """The secret, or None when none is configured or its file is not there yet."""
        if self._value is None and self.file:
            try:
                text = Path(self.file).read_text().strip()
            except OSError:
                return None
            if text:
                self._value = text.encode()
        return self._value

    def ensure(self) -> bytes:
        """The root's side in compose: make the secret file if it is missing (0600), then read it."""
        if self.current() is None:
            if not self.file:
                raise ValueError("no CLUSTER_SECRET or CLUSTER_SECRET_FILE to make a secret in")
            path = Path(self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o644)  # the workers run as another user and mount the folder read-only
        return self.current()

    def headers(self) -> dict:
        value = self.current()
        return {HEADER: value.decode()} if value else {}

    def accepts(self, presented: str | None) -> bool:
        """True when no secret is configured, or the presented one is it (constant time)."""
        if not self.configured:
            return True
        value = self.current()
        return value is not None and presented is not None and hmac.compare_digest(presented.encode(), value)
