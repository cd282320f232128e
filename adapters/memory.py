"""In-memory fakes of the ports for unit tests: the same rules as the real adapters, no emulator."""
from __future__ import annotations

import copy
import dataclasses
import threading
import uuid
from typing import Callable, Iterator

from adapters.jobs import Failure, JobRequest, JobState, JobStatus, marked_deleted, transitioned, utc_now

__all__ = ["InMemoryBlobStore", "InMemoryIam", "InMemoryJobQueue", "InMemoryKeyStore", "InMemoryStatusStore",
           "MemorySpec"]


class InMemoryJobQueue:
    """Keeps what was published, in order: `messages` (requests) and `dead_letters` (pairs)."""

    def __init__(self) -> None:
        self.messages: list[JobRequest] = []
        self.dead_letters: list[tuple[JobRequest | bytes, Failure]] = []
        self._lock = threading.Lock()

    def publish(self, request: JobRequest) -> str:
        with self._lock:
            self.messages.append(request)
        return uuid.uuid4().hex

    def publish_dead_letter(self, request: JobRequest | bytes, failure: Failure) -> str:
        with self._lock:
            self.dead_letters.append((request, failure))
        return uuid.uuid4().hex


class InMemoryStatusStore:
    """Status documents in a dict behind a lock (the lock plays the transaction)."""

    def __init__(self) -> None:
        self._docs: dict[str, JobStatus] = {}
        self._lock = threading.Lock()
        self.writes = 0  # how many documents were written, for the coalescing tests
        self._watchers: dict[str, list[Callable[[JobStatus | None], None]]] = {}

    def create(self, status: JobStatus) -> bool:
        with self._lock:
            if status.job_id in self._docs:
                return False
            self._docs[status.job_id] = copy.deepcopy(status)
            self.writes += 1
        self._changed(status.job_id)
        return True

    def get(self, job_id: str) -> JobStatus | None:
        with self._lock:
            status = self._docs.get(job_id)
            return copy.deepcopy(status) if status else None

    def transition(self, job_id: str, state: JobState, attempt: int, **fields) -> JobStatus:
        with self._lock:
            updated = transitioned(self._docs.get(job_id), state, attempt, **fields)
            self._docs[job_id] = updated
            self.writes += 1
        self._changed(job_id)
        return copy.deepcopy(updated)

    def record_progress(self, job_id: str, attempt: int, *, chunks_done: int, chunks_total: int,
                        bytes_in: int, bytes_out: int) -> bool:
        with self._lock:
            current = self._docs.get(job_id)
            if current is None or current.state is not JobState.RUNNING or current.attempt != attempt:
                return False
            now = utc_now()
            current.chunks_done = max(current.chunks_done, chunks_done)
            current.chunks_total = max(current.chunks_total, chunks_total)
            current.bytes_in = max(current.bytes_in, bytes_in)
            current.bytes_out = max(current.bytes_out, bytes_out)
            current.heartbeat = current.updated = now
            self.writes += 1
        self._changed(job_id)
        return True

    def list_jobs(self, owner: str, state: JobState | None = None, limit: int = 50,
                  cursor: str | None = None) -> tuple[list[JobStatus], str | None]:
        with self._lock:
            mine = sorted((s for s in self._docs.values() if s.owner == owner),
                          key=lambda s: (s.times.get(JobState.QUEUED.value, ""), s.job_id), reverse=True)
        start = 0
        if cursor is not None:
            # The cursor's place in the order, as Firestore's start_after finds it: even when its job
            # no longer passes the filters (deleted, or in another state by now).
            ids = [s.job_id for s in mine]
            start = ids.index(cursor) + 1 if cursor in ids else len(ids)
        jobs = [s for s in mine[start:] if not s.deleted and (state is None or s.state is state)]
        page = jobs[:limit]
        return copy.deepcopy(page), (page[-1].job_id if len(jobs) > limit and page else None)

    def stale_jobs(self, queued_before: str, heartbeat_before: str) -> list[JobStatus]:
        with self._lock:
            return [copy.deepcopy(s) for s in self._docs.values()
                    if (s.state is JobState.QUEUED and s.updated and s.updated < queued_before)
                    or (s.state is JobState.RUNNING and (s.heartbeat or "") < heartbeat_before)]

    def mark_deleted(self, job_id: str) -> JobStatus | None:
        with self._lock:
            updated = marked_deleted(self._docs.get(job_id))
            if updated is None:
                return None
            self._docs[job_id] = updated
            self.writes += 1
        self._changed(job_id)
        return copy.deepcopy(updated)

    def deleted_jobs(self, deleted_before: str) -> list[JobStatus]:
        with self._lock:
            return [copy.deepcopy(s) for s in self._docs.values() if s.deleted and s.deleted < deleted_before]

    def purge(self, job_id: str) -> None:
        with self._lock:
            self._docs.pop(job_id, None)
        self._changed(job_id)

    def watch(self, job_id: str, callback: Callable[[JobStatus | None], None]) -> "_MemoryWatch":
        """Calls back with the document now and after each write to it (on the writer's thread,
        as Firestore calls back on a thread of its own)."""
        with self._lock:
            self._watchers.setdefault(job_id, []).append(callback)
        callback(self.get(job_id))
        return _MemoryWatch(self, job_id, callback)

    def _changed(self, job_id: str) -> None:
        # Outside the lock: a callback may read the store.
        with self._lock:
            callbacks = list(self._watchers.get(job_id, ()))
        if callbacks:
            snapshot = self.get(job_id)
            for callback in callbacks:
                callback(copy.deepcopy(snapshot))


@dataclasses.dataclass
class _MemoryWatch:
    store: InMemoryStatusStore
    job_id: str
    callback: Callable[[JobStatus | None], None]

    def close(self) -> None:
        with self.store._lock:
            callbacks = self.store._watchers.get(self.job_id, [])
            if self.callback in callbacks:
                callbacks.remove(self.callback)


class InMemoryKeyStore:
    """API key hashes -> owners in a dict."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        self._created: dict[str, str] = {}
        self._watchers: list[Callable[[str], None]] = []

    def add(self, key_hash: str, owner: str) -> None:
        self._owners[key_hash] = owner
        self._created[key_hash] = utc_now()

    def owner_of(self, key_hash: str) -> str | None:
        return self._owners.get(key_hash)

    def records(self, owner: str | None = None) -> list[dict]:
        return [{"hash": h, "owner": o, "created": self._created.get(h)} for h, o in self._owners.items()
                if owner is None or o == owner]

    def remove(self, key_hash: str) -> bool:
        found = self._owners.pop(key_hash, None) is not None
        self._created.pop(key_hash, None)
        if found:
            for callback in list(self._watchers):
                callback(key_hash)
        return found

    def watch_removals(self, callback: Callable[[str], None]) -> "_KeyWatch":
        self._watchers.append(callback)
        return _KeyWatch(self._watchers, callback)


@dataclasses.dataclass
class _KeyWatch:
    watchers: list
    callback: Callable[[str], None]

    def close(self) -> None:
        if self.callback in self.watchers:
            self.watchers.remove(self.callback)


class InMemoryBlobStore:
    """gs:// objects as bytes in a dict; an upload is visible only once committed, like GCS's."""

    def __init__(self, read_piece: int = 64 * 2**10) -> None:
        self.objects: dict[str, bytes] = {}
        self.open_uploads = 0  # uploads neither committed nor aborted, for the leak tests
        self.sessions: set[str] = set()  # direct-upload sessions a client could still finish
        self._read_piece = read_piece
        self._lock = threading.Lock()

    def open_upload(self, uri: str, content_type: str = "application/octet-stream") -> "_MemoryUpload":
        with self._lock:
            self.open_uploads += 1
        return _MemoryUpload(self, uri)

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self._lock:
            self.objects[uri] = bytes(data)

    def size(self, uri: str) -> int | None:
        with self._lock:
            data = self.objects.get(uri)
        return None if data is None else len(data)

    def read_chunks(self, uri: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self._lock:
            data = self.objects.get(uri)
        if data is None:
            raise FileNotFoundError(f"no such object: {uri}")
        end = len(data) if end is None else min(end, len(data))
        for offset in range(start, end, self._read_piece):
            yield data[offset:min(end, offset + self._read_piece)]

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            names = [uri for uri in self.objects if uri.startswith(prefix)]
            for uri in names:
                del self.objects[uri]
        return len(names)

    def start_session(self, uri: str, content_type: str = "application/octet-stream",
                      size: int | None = None) -> str:
        url = f"memory-session:{uri}"
        with self._lock:
            self.sessions.add(url)
        return url

    def cancel_session(self, url: str) -> None:
        with self._lock:
            self.sessions.discard(url)

    def finish_session(self, url: str, data: bytes) -> None:
        """What a client's upload to a session URL does (tests stand in for the client)."""
        with self._lock:
            if url not in self.sessions:
                raise FileNotFoundError(f"no such upload session: {url}")
            self.sessions.discard(url)
        self.write_bytes(url.removeprefix("memory-session:"), data)

    def list_prefix(self, prefix: str) -> Iterator[str]:
        with self._lock:
            return iter(sorted(uri for uri in self.objects if uri.startswith(prefix)))


class _MemoryUpload:
    def __init__(self, store: InMemoryBlobStore, uri: str) -> None:
        self._store, self._uri = store, uri
        self._pieces: list[bytes] | None = []

    def write(self, data: bytes) -> None:
        if self._pieces is None:
            raise ValueError(f"upload of {self._uri} is finished")
        self._pieces.append(bytes(data))

    def commit(self) -> int:
        if self._pieces is None:
            raise ValueError(f"upload of {self._uri} is finished")
        data = b"".join(self._pieces)
        self._pieces = None
        with self._store._lock:
            self._store.objects[self._uri] = data
            self._store.open_uploads -= 1
        return len(data)

    def abort(self) -> None:
        if self._pieces is not None:
            self._pieces = None
            with self._store._lock:
                self._store.open_uploads -= 1



class InMemoryIam:
    """IamAdmin in memory, with IAM's rules: setIamPolicy checks the etag (a stale one is Aborted),
    conditional bindings need policy version 3, a binding's member must exist when it is a service
    account of `project`. `errors` maps a resource (or email) to the exception its next calls raise;
    `writes` lists what was changed, in order."""

    def __init__(self, project: str = "dcas-prod", number: str = "123456789012") -> None:
        self.project, self.number = project, number
        self.accounts: dict[str, dict] = {}
        self.policies: dict[str, dict] = {}
        self.errors: dict[str, Exception] = {}
        self.writes: list[tuple[str, str]] = []

    def _check(self, name: str) -> None:
        if name in self.errors:
            raise self.errors[name]

    def service_account(self, email: str) -> dict | None:
        self._check(email)
        return copy.deepcopy(self.accounts.get(email))

    def create_service_account(self, project: str, account_id: str, display_name: str) -> dict:
        from google.api_core import exceptions
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        self._check(email)
        if email in self.accounts:
            raise exceptions.Conflict(f"Service account {account_id} already exists within project {project}.")
        self.accounts[email] = {"email": email, "displayName": display_name}
        self.writes.append(("create", email))
        return copy.deepcopy(self.accounts[email])

    def project_number(self, project: str) -> str:
        self._check(f"projects/{project}")
        return self.number

    def get_policy(self, resource: str) -> dict:
        self._check(resource)
        return copy.deepcopy(self.policies.setdefault(resource, {"version": 1, "etag": "BwAAAA=="}))

    def set_policy(self, resource: str, policy: dict) -> dict:
        from google.api_core import exceptions
        self._check(resource)
        current = self.policies.setdefault(resource, {"version": 1, "etag": "BwAAAA=="})
        if policy.get("etag") != current["etag"]:
            raise exceptions.Aborted("There were concurrent policy changes. Please retry the whole "
                                     "read-modify-write with exponential backoff.")
        bindings = policy.get("bindings", [])
        if any(b.get("condition") for b in bindings) and policy.get("version", 1) < 3:
            raise exceptions.BadRequest("Policies with conditions need version 3")
        for member in (m for b in bindings for m in b["members"]):
            email = member.removeprefix("serviceAccount:")
            if email.endswith(f"@{self.project}.iam.gserviceaccount.com") and email not in self.accounts:
                raise exceptions.BadRequest(f"Service account {email} does not exist.")
        new = {**copy.deepcopy(policy), "etag": f"BwA{len(self.writes):05d}="}
        self.policies[resource] = new
        self.writes.append(("set", resource))
        return copy.deepcopy(new)

    def close(self) -> None:
        pass

# Named fakes that a pickled spec finds again in the same process (TestPipeline and the local
# streaming runner run DoFns in this process): what a real spec's open() does with a client.
_REGISTRY: dict[str, object] = {}


@dataclasses.dataclass(frozen=True)
class MemorySpec:
    """A picklable handle on a named in-memory fake; `open()` returns the same object every time."""

    name: str

    def open(self):
        return _REGISTRY[self.name]

    @classmethod
    def register(cls, name: str, fake: object) -> "MemorySpec":
        _REGISTRY[name] = fake
        return cls(name)
