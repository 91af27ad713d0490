import pytest

from worker.caches import CacheFull, KVCacheStore


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_bounded_and_released():
    store = KVCacheStore(max_caches=2, ttl_s=100)
    a = store.get_or_create("a", 0)
    store.get_or_create("b", 0)
    with pytest.raises(CacheFull):
        store.get_or_create("c", 0)
    assert store.get_or_create("a", 5) is a
    assert store.release("a") and not store.release("a")
    store.get_or_create("c", 0)
    assert sorted(store.ids()) == ["b", "c"]


def test_unknown_request_mid_stream_is_refused():
    with pytest.raises(KeyError, match="no KV cache"):
        KVCacheStore(2, 100).get_or_create("x", 3)


def test_idle_caches_expire():
    clock = Clock()
    store = KVCacheStore(max_caches=4, ttl_s=10, clock=clock)
    store.get_or_create("old", 0)
    clock.t = 5
    store.get_or_create("new", 0)
    clock.t = 12
    assert store.ids() == ["new"]
    with pytest.raises(KeyError):
        store.get_or_create("old", 1)


def test_restart_at_position_zero_replaces_the_cache():
    store = KVCacheStore(2, 100)
    first = store.get_or_create("a", 0)
    assert store.get_or_create("a", 0) is not first
