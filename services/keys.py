"""API keys: made here, stored only as their SHA-256 with one owner each, checked on every request."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
import threading
import time

from adapters.ports import KeyStore

__all__ = ["KEY_PREFIX", "OWNER_PATTERN", "CachedKeys", "KeyInfo", "Unauthenticated", "authenticate", "create_key",
           "hash_key", "key_id", "list_keys", "remembered_owner", "revoke"]

log = logging.getLogger("dcas.keys")

KEY_PREFIX = "dcas_"
# A key's public name: the start of its hash (48 bits), enough to tell an owner's keys apart and
# to revoke one, and useless for finding the key.
KEY_ID_LENGTH = 12
_KEY_ID = re.compile(rf"[0-9a-f]{{{KEY_ID_LENGTH}}}")
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


def key_id(key_hash: str) -> str:
    return key_hash[:KEY_ID_LENGTH]


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    key_id: str
    owner: str
    created: str | None


def list_keys(keys: KeyStore, owner: str | None = None) -> list[KeyInfo]:
    """The keys (of `owner`, or all), by owner then creation time; only their ids, never a hash."""
    found = [KeyInfo(key_id(r["hash"]), r["owner"], r.get("created")) for r in keys.records(owner)]
    return sorted(found, key=lambda k: (k.owner, k.created or "", k.key_id))


def revoke(keys: KeyStore, target: str) -> list[KeyInfo]:
    """Removes the key whose id is `target` or, when no key has that id, every key of the owner
    `target`; returns what was revoked. LookupError when nothing matches."""
    records = keys.records()
    chosen = [r for r in records if _KEY_ID.fullmatch(target or "") and key_id(r["hash"]) == target]
    if not chosen:
        chosen = [r for r in records if r["owner"] == target]
    if not chosen:
        raise LookupError(f"no key has the id {target!r} and no owner is called that: "
                          "`dcas keys list` shows them")
    revoked = []
    for record in chosen:
        if keys.remove(record["hash"]):
            revoked.append(KeyInfo(key_id(record["hash"]), record["owner"], record.get("created")))
    return revoked


def authenticate(keys: KeyStore, authorization: str | None, id_tokens=None) -> str:
    """The owner of the key in an `Authorization: Bearer KEY` header, or of a Google-signed
    identity token there when `id_tokens` (services.identity.IdTokens) is given; Unauthenticated
    otherwise."""
    if not authorization:
        raise Unauthenticated("an API key is required: send 'Authorization: Bearer KEY'")
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthenticated("the Authorization header must be 'Bearer KEY'")
    if id_tokens is not None and not key.startswith(KEY_PREFIX):
        from services.identity import looks_like_jwt
        if looks_like_jwt(key):
            try:
                return id_tokens.owner_of(key)
            except ValueError as e:
                raise Unauthenticated(str(e)) from None
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
    instead of two. Unknown keys are not remembered (a new key works at once). A revoked key is
    forgotten as soon as the store's listener reports it (watch_removals), so it is refused at once
    by every process; `ttl` only bounds how long a missed report could keep it working."""

    def __init__(self, store: KeyStore, ttl: float = 10.0, max_entries: int = 10_000,
                 clock=time.monotonic) -> None:
        self._store, self._ttl, self._max, self._clock = store, ttl, max_entries, clock
        self._owners: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._removals = 0  # a lookup that overlapped a removal does not cache what it read
        self._watch = None
        watch = getattr(store, "watch_removals", None)
        if watch is not None and ttl > 0:
            try:
                self._watch = watch(self.forget)
            except Exception as e:  # noqa: BLE001 - keys still work; revocations wait for the ttl
                log.warning("no listener for revoked keys (%s: %s): a revoked key works for up to %g s",
                            type(e).__name__, e, ttl)

    def add(self, key_hash: str, owner: str) -> None:
        self._store.add(key_hash, owner)

    def remembered(self, key_hash: str) -> str | None:
        """The owner found for `key_hash` less than `ttl` seconds ago, or None."""
        with self._lock:
            found = self._owners.get(key_hash)
        return found[0] if found is not None and found[1] > self._clock() else None

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self._owners.pop(key_hash, None)
            self._removals += 1

    def owner_of(self, key_hash: str) -> str | None:
        now = self._clock()
        with self._lock:
            found = self._owners.get(key_hash)
            removals = self._removals
        if found is not None and found[1] > now:
            return found[0]
        owner = self._store.owner_of(key_hash)
        if owner is not None:
            with self._lock:
                if removals != self._removals:
                    return owner
                if len(self._owners) >= self._max:
                    self._owners.clear()
                self._owners[key_hash] = (owner, now + self._ttl)
        return owner

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
