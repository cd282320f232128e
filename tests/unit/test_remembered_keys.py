"""A key found lately is answered from memory, without a store read (the route checks it on the event loop)."""
from __future__ import annotations

from adapters.memory import InMemoryKeyStore
from services import keys


class _CountingKeys(InMemoryKeyStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def owner_of(self, key_hash: str) -> str | None:
        self.reads += 1
        return super().owner_of(key_hash)


def test_a_key_is_remembered_only_after_the_store_found_it_and_only_for_the_ttl():
    store, now = _CountingKeys(), [0.0]
    cached = keys.CachedKeys(store, ttl=60, clock=lambda: now[0])
    key = keys.create_key(cached, "ann")
    header = f"Bearer {key}"
    assert keys.remembered_owner(cached, header) is None and store.reads == 0
    assert keys.authenticate(cached, header) == "ann" and store.reads == 1
    assert keys.remembered_owner(cached, f"  bearer   {key} ") == "ann" and store.reads == 1
    now[0] = 61
    assert keys.remembered_owner(cached, header) is None


def test_a_malformed_or_unknown_header_is_never_remembered():
    cached = keys.CachedKeys(_CountingKeys())
    for header in (None, "", "Basic abc", "Bearer", "Bearer dcas_unknown"):
        assert keys.remembered_owner(cached, header) is None
