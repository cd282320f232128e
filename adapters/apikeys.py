"""The KeyStore port on Firestore: one document per key hash, holding its owner."""
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

    def close(self) -> None:
        self._client.close()
