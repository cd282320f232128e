"""The KeyStore port on Firestore: one document per key hash, holding its owner; a listener reports revoked keys."""
from __future__ import annotations

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
        """A listener on the whole collection (one per process): its first snapshot lists every key
        as added, later ones report the removed keys."""
        def on_snapshot(snapshots, changes, read_time) -> None:
            for change in changes:
                if change.type.name == "REMOVED":
                    callback(change.document.id)
        return _KeyWatch(self._keys.on_snapshot(on_snapshot))

    def close(self) -> None:
        self._client.close()


class _KeyWatch:
    def __init__(self, watch) -> None:
        self._watch = watch

    def close(self) -> None:
        self._watch.unsubscribe()
