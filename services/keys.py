"""API keys: made here, stored only as their SHA-256 with one owner each, checked on every request."""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time

from adapters.ports import KeyStore

__all__ = ["KEY_PREFIX", "OWNER_PATTERN", "CachedKeys", "Unauthenticated", "authenticate", "create_key", "hash_key",
           "remembered_owner"]

KEY_PREFIX = "dcas_"
# Owners name folders and appear in logs: a short, plain alphabet.
OWNER_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class Unauthenticated(Exception):
    """No key, a malformed header, or a key nobody owns."""


def hash_key(key: str) -> str:
    # A key carries 256 random bits, so a plain hash cannot be brute-forced; a slow password hash
    # would only cost every request time.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(keys: KeyStore, owner: str) -> str:
    """A new key for `owner` (stored hashed); the key itself is returned once and kept nowhere."""
    if not OWNER_PATTERN.fullmatch(owner or ""):
        raise ValueError(f"owner {owner!r} must be 1-64 lowercase letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    keys.add(hash_key(key), owner)
    return key


def authenticate(keys: KeyStore, authorization: str | None) -> str:
    """The owner of the key in an `Authorization: Bearer KEY` header; Unauthenticated otherwise."""
    if not authorization:
        raise Unauthenticated("an API key is required: send 'Authorization: Bearer KEY'")
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthenticated("the Authorization header must be 'Bearer KEY'")
    owner = keys.owner_of(hash_key(key))
    if owner is None:
        raise Unauthenticated("unknown API key")
    return owner


def remembered_owner(keys: "CachedKeys", authorization: str | None) -> str | None:
    """The owner `keys` remembers for the key in a well-formed Bearer header, without asking the
    store (so without blocking); None otherwise: then authenticate() decides, and says why."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    return keys.remembered(hash_key(key))


class CachedKeys:
    """A KeyStore that remembers found owners for `ttl` seconds, so a request costs one status read
    instead of two. Unknown keys are not remembered (a new key works at once); a removed key would
    keep working for up to `ttl` (there is no revocation yet)."""

    def __init__(self, store: KeyStore, ttl: float = 60.0, max_entries: int = 10_000,
                 clock=time.monotonic) -> None:
        self._store, self._ttl, self._max, self._clock = store, ttl, max_entries, clock
        self._owners: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def add(self, key_hash: str, owner: str) -> None:
        self._store.add(key_hash, owner)

    def remembered(self, key_hash: str) -> str | None:
        """The owner found for `key_hash` less than `ttl` seconds ago, or None."""
        with self._lock:
            found = self._owners.get(key_hash)
        return found[0] if found is not None and found[1] > self._clock() else None

    def owner_of(self, key_hash: str) -> str | None:
        now = self._clock()
        with self._lock:
            found = self._owners.get(key_hash)
        if found is not None and found[1] > now:
            return found[0]
        owner = self._store.owner_of(key_hash)
        if owner is not None:
            with self._lock:
                if len(self._owners) >= self._max:
                    self._owners.clear()
                self._owners[key_hash] = (owner, now + self._ttl)
        return owner
