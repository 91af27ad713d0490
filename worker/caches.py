"""KV caches of the requests a worker is serving: bounded in number, dropped when idle too long."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

from transformers.cache_utils import DynamicCache


class CacheFull(Exception):
    """Every cache slot holds an active request."""


class KVCacheStore:
    def __init__(self, max_caches: int, ttl_s: float, clock=time.monotonic):
        self.max_caches, self.ttl_s, self.clock = max_caches, ttl_s, clock
        self._caches: OrderedDict[str, tuple[DynamicCache, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_create(self, request_id: str, start_pos: int) -> DynamicCache:
        """A new request (start_pos 0) gets a fresh cache; later steps find theirs."""
        with self._lock:
            self._expire()
            if start_pos == 0:
                self._caches.pop(request_id, None)
                if len(self._caches) >= self.max_caches:
                    raise CacheFull(f"all {self.max_caches} KV cache slots are in use")
                cache = DynamicCache()
            elif request_id in self._caches:
                cache = self._caches.pop(request_id)[0]
            else:
                raise KeyError(f"no KV cache for request {request_id} (expired, released or never started)")
            self._caches[request_id] = (cache, self.clock())
            return cache

    def release(self, request_id: str) -> bool:
        with self._lock:
            return self._caches.pop(request_id, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._caches.clear()

    def ids(self) -> list[str]:
        with self._lock:
            self._expire()
            return list(self._caches)

    def _expire(self) -> None:
        now = self.clock()
        for rid in [rid for rid, (_, used) in self._caches.items() if now - used > self.ttl_s]:
            del self._caches[rid]
