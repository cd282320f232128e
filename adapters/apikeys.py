"""The KeyStore port on Firestore: one document per key hash, holding its owner; a listener reports revoked keys."""
from __future__ import annotations

import threading

from adapters.firestore import KeptListener
from adapters.jobs import utc_now
from adapters.retries import CALL_TIMEOUT, firestore_retry

__all__ = ["FirestoreKeyStore"]


class FirestoreKeyStore:
    """API key hashes in a collection of their own (document id = the SHA-256 hex)."""

    def __init__(self, project: str, collection: str = "api_keys") -> None:
        from google.cloud import firestore
        self._client = firestore.Client(project=project)
        self._keys = self._client.collection(collection)
        self._call = {"retry": firestore_retry(), "timeout": CALL_TIMEOUT}

    def add(self, key_hash: str, owner: str) -> None:
        self._keys.document(key_hash).set({"owner": owner, "created": utc_now()}, **self._call)

    def owner_of(self, key_hash: str) -> str | None:
        snapshot = self._keys.document(key_hash).get(**self._call)
        return snapshot.get("owner") if snapshot.exists else None

    def records(self, owner: str | None = None) -> list[dict]:
        query = self._keys
        if owner is not None:
            from google.cloud.firestore_v1.base_query import FieldFilter
            query = query.where(filter=FieldFilter("owner", "==", owner))
        return [{"hash": s.id, "owner": s.get("owner"), "created": (s.to_dict() or {}).get("created")}
                for s in query.stream(**self._call)]

    def remove(self, key_hash: str) -> bool:
        reference = self._keys.document(key_hash)
        if not reference.get(**self._call).exists:
            return False
        reference.delete(**self._call)
        return True

    def watch_removals(self, callback) -> "_KeyWatch":
        """A listener on the whole collection (one per process) that reports each key gone since
        its last snapshot, including keys removed while its stream was down and subscribed again."""
        return _KeyWatch(callback).start(self._keys.on_snapshot)

    def close(self) -> None:
        self._client.close()


class _KeyWatch:
    """Compares each snapshot's set of keys with the last one's: a removal is whatever went missing.
    Change events alone would lose a key removed between two subscriptions of a KeptListener."""

    def __init__(self, callback) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._present: set[str] | None = None
        self.listener: KeptListener | None = None

    def start(self, on_snapshot) -> "_KeyWatch":
        self.listener = KeptListener(lambda: on_snapshot(self.on_snapshot)).start()
        return self

    def on_snapshot(self, snapshots, changes, read_time) -> None:
        present = {snapshot.id for snapshot in snapshots}
        with self._lock:
            removed = sorted(self._present - present) if self._present is not None else []
            self._present = present
        for key_hash in removed:
            self._callback(key_hash)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
