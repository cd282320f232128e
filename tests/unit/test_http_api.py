"""The HTTP API over in-memory fakes of the ports: auth, uploads, limits, status, results, events."""
from __future__ import annotations

import asyncio
import json
import types

import numpy as np
import pytest
from fastapi.testclient import TestClient

import codec
from adapters.jobs import JobState
from adapters.memory import InMemoryBlobStore, InMemoryJobQueue, InMemoryKeyStore, InMemoryStatusStore
from adapters.messages import decode_frequency_table
from services import keys
from services.http import HttpSettings, create_app
from services.uploads import UploadLimits, safe_filename

BUCKET = "bkt"


def fakes():
    return types.SimpleNamespace(queue=InMemoryJobQueue(), status=InMemoryStatusStore(),
                                 blobs=InMemoryBlobStore(), keys=InMemoryKeyStore())


@pytest.fixture
def adapters():
    return fakes()


def make_client(adapters, **limits) -> TestClient:
    settings = HttpSettings(BUCKET, UploadLimits(**{"buffer_size": 256 * 1024, **limits}), keepalive=0.2)
    return TestClient(create_app(adapters, settings))


@pytest.fixture
def client(adapters):
    return make_client(adapters)


def auth(adapters, owner="ann"):
    return {"Authorization": f"Bearer {keys.create_key(adapters.keys, owner)}"}


def upload(client, headers, data=b"hello world", operation="compress", filename="a.txt"):
    return client.post("/v1/jobs", params={"operation": operation, "filename": filename},
                       content=data, headers={**headers, "Content-Type": "application/octet-stream"})


def run_job(adapters, job_id: str, output: bytes | None = None) -> None:
    """What the pipeline does to a job, on the fakes: claim it, write an output, succeed."""
    status = adapters.status.get(job_id)
    adapters.status.transition(job_id, JobState.RUNNING, status.attempt)
    data = b"".join(adapters.blobs.read_chunks(status.input))
    if output is None:
        output = codec.encode(data) if status.operation == "compress" else codec.decode(data)
    adapters.blobs.write_bytes(status.output, output)
    if status.operation == "compress":
        adapters.blobs.write_bytes(status.output + ".meta.json",
                                   json.dumps({"og_size": len(data), "cp_size": len(output)}).encode())
    adapters.status.transition(job_id, JobState.SUCCEEDED, status.attempt, bytes_in=len(data),
                               bytes_out=len(output))


def test_a_request_without_a_key_is_refused_with_401_json(client):
    response = client.get("/v1/jobs")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["error"]


def test_an_unknown_key_is_refused_with_401(client):
    response = client.get("/v1/jobs", headers={"Authorization": "Bearer dcas_nope"})
    assert response.status_code == 401 and response.json()["error"] == "unknown API key"


def test_keys_are_stored_only_as_hashes(adapters):
    key = keys.create_key(adapters.keys, "ann")
    assert key not in adapters.keys._owners and adapters.keys.owner_of(keys.hash_key(key)) == "ann"


def test_upload_stores_the_file_and_its_histogram_then_queues_the_job(adapters, client):
    data = bytes(range(256)) * 3000 + b"tail"
    response = upload(client, auth(adapters), data)
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["job_id"]
    assert body["status_url"].endswith(f"/v1/jobs/{job_id}") and body["result_url"].endswith("/result")
    [message] = adapters.queue.messages
    assert message.job_id == job_id and message.owner == "ann" and message.operation == "compress"
    assert adapters.blobs.objects[message.input_uri] == data
    assert message.input_uri == f"gs://{BUCKET}/jobs/{job_id}/in/a.txt"
    table = decode_frequency_table(adapters.blobs.objects[message.table_uri])
    np.testing.assert_array_equal(table, codec.histogram(data))
    assert adapters.status.get(job_id).state is JobState.QUEUED


def test_the_status_document_exists_before_the_message_is_published(adapters, client):
    seen = []
    publish = adapters.queue.publish
    adapters.queue.publish = lambda request: (seen.append(adapters.status.get(request.job_id)), publish(request))[1]
    upload(client, auth(adapters))
    assert seen[0] is not None and seen[0].state is JobState.QUEUED


def test_a_message_the_queue_refuses_fails_the_job_and_answers_503(adapters, client):
    def refuse(request):
        raise ValueError("schema says no")
    adapters.queue.publish = refuse
    response = upload(client, auth(adapters))
    assert response.status_code == 503 and "schema says no" in response.json()["error"]
    [status] = adapters.status.list_jobs("ann")[0]
    assert status.state is JobState.FAILED


def test_a_message_that_cannot_be_sent_now_leaves_the_job_queued_for_the_reconciler(adapters, client):
    def unavailable(request):
        raise ConnectionError("queue unavailable")
    adapters.queue.publish = unavailable
    response = upload(client, auth(adapters))
    assert response.status_code == 202 and response.json()["state"] == "QUEUED"


@pytest.mark.parametrize("name, stored", [
    ("../../etc/passwd", "passwd"),
    ("/abs/path/x.bin", "x.bin"),
    ("..\\..\\win.ini", "win.ini"),
    ("dir/../../y", "y"),
    ("x/..", "x"),
    ("a.txt/", "a.txt"),
])
def test_names_that_try_to_escape_the_job_folder_are_reduced_to_their_last_component(adapters, client, name, stored):
    response = upload(client, auth(adapters), filename=name)
    assert response.status_code == 202, response.text
    [message] = adapters.queue.messages
    assert message.input_uri == f"gs://{BUCKET}/jobs/{message.job_id}/in/{stored}"
    assert all(uri.startswith(f"gs://{BUCKET}/jobs/{message.job_id}/in/") for uri in adapters.blobs.objects)


@pytest.mark.parametrize("name", ["..", ".", "a\x00b", "line\nbreak", "", "../", "/", "x\u2028y", "\x85"])
def test_names_that_are_not_file_names_are_refused(adapters, client, name):
    with pytest.raises(ValueError):
        safe_filename(name)
    response = upload(client, auth(adapters), filename=name)
    assert response.status_code in (400, 422), response.text  # 422: the schema's pattern caught it
    assert adapters.blobs.objects == {} and adapters.queue.messages == []


def test_a_declared_size_over_the_limit_is_refused_with_413_before_reading(adapters):
    client = make_client(adapters, max_size=1000)
    response = upload(client, auth(adapters), b"x" * 1001)
    assert response.status_code == 413
    assert adapters.blobs.objects == {} and adapters.blobs.open_uploads == 0


def test_a_streamed_body_over_the_limit_is_cut_off_with_413_and_nothing_kept(adapters):
    client = make_client(adapters, max_size=300_000)
    chunks = (b"y" * 100_000 for _ in range(5))  # no Content-Length: chunked transfer
    response = client.post("/v1/jobs", params={"operation": "compress", "filename": "big"},
                           content=chunks, headers=auth(adapters))
    assert response.status_code == 413
    assert adapters.blobs.objects == {} and adapters.blobs.open_uploads == 0
    assert adapters.queue.messages == [] and client.app.state.slots.in_use == 0


def test_too_many_uploads_of_one_owner_are_refused_with_429_and_retry_after(adapters):
    client = make_client(adapters, per_owner=1, total=5)
    headers = auth(adapters)
    client.app.state.slots.acquire("ann")  # one upload of ann's is in flight
    response = upload(client, headers)
    assert response.status_code == 429 and response.headers["retry-after"].isdigit()
    assert upload(client, auth(adapters, "bob")).status_code == 202  # others are not held up


def test_the_total_number_of_uploads_is_bounded_too(adapters):
    client = make_client(adapters, per_owner=5, total=1)
    client.app.state.slots.acquire("zed")
    assert upload(client, auth(adapters)).status_code == 429


def test_another_owners_job_answers_404_everywhere(adapters, client):
    job_id = upload(client, auth(adapters, "ann")).json()["job_id"]
    run_job(adapters, job_id)
    bob = auth(adapters, "bob")
    for method, path in [("GET", ""), ("GET", "/result"), ("GET", "/metadata"), ("GET", "/events"), ("DELETE", "")]:
        response = client.request(method, f"/v1/jobs/{job_id}{path}", headers=bob)
        assert response.status_code == 404, (method, path, response.status_code)
        assert "error" in response.json()
    assert adapters.status.get(job_id).state is JobState.SUCCEEDED
    assert client.get("/v1/jobs", headers=bob).json()["jobs"] == []


def test_status_of_a_job_is_its_document_without_the_internal_request(adapters, client):
    headers = auth(adapters)
    job_id = upload(client, headers).json()["job_id"]
    body = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert body["state"] == "QUEUED" and body["job_id"] == job_id and body["filename"] == "a.txt"
    assert "request" not in body


def test_the_job_list_is_paginated_and_filtered_by_state(adapters, client):
    headers = auth(adapters)
    ids = [upload(client, headers, filename=f"f{i}").json()["job_id"] for i in range(5)]
    run_job(adapters, ids[0])
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params, headers=headers).json()
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    done = client.get("/v1/jobs", params={"state": "SUCCEEDED"}, headers=headers).json()["jobs"]
    assert [job["job_id"] for job in done] == [ids[0]]
    assert client.get("/v1/jobs", params={"state": "NOPE"}, headers=headers).status_code == 422


def test_a_cursor_of_another_owners_job_is_refused(adapters, client):
    job_id = upload(client, auth(adapters, "ann")).json()["job_id"]
    response = client.get("/v1/jobs", params={"cursor": job_id}, headers=auth(adapters, "bob"))
    assert response.status_code == 404


def test_the_result_streams_whole_or_by_range(adapters, client):
    headers = auth(adapters)
    data = bytes(range(256)) * 1000
    job_id = upload(client, headers, data).json()["job_id"]
    assert client.get(f"/v1/jobs/{job_id}/result", headers=headers).status_code == 409
    run_job(adapters, job_id)
    whole = client.get(f"/v1/jobs/{job_id}/result", headers=headers)
    assert whole.status_code == 200 and codec.decode(whole.content) == data
    assert whole.headers["accept-ranges"] == "bytes" and "a.txt.dcz" in whole.headers["content-disposition"]
    size = len(whole.content)
    part = client.get(f"/v1/jobs/{job_id}/result", headers={**headers, "Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == whole.content[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{size}"
    tail = client.get(f"/v1/jobs/{job_id}/result", headers={**headers, "Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == whole.content[-7:]
    beyond = client.get(f"/v1/jobs/{job_id}/result", headers={**headers, "Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"


def test_metadata_is_served_for_compress_jobs_only(adapters, client):
    headers = auth(adapters)
    compress = upload(client, headers, b"abc" * 100).json()["job_id"]
    run_job(adapters, compress)
    assert client.get(f"/v1/jobs/{compress}/metadata", headers=headers).json()["og_size"] == 300
    decompress = upload(client, headers, codec.encode(b"abc"), "decompress", "x.dcz").json()["job_id"]
    run_job(adapters, decompress)
    assert client.get(f"/v1/jobs/{decompress}/metadata", headers=headers).status_code == 409
    assert client.get(f"/v1/jobs/{decompress}/result", headers=headers).content == b"abc"
    assert adapters.status.get(decompress).output.endswith("/out/x")
    assert adapters.queue.messages[-1].table_uri is None


def test_delete_cancels_a_queued_job_removes_its_objects_and_the_job_is_gone(adapters, client):
    headers = auth(adapters)
    job_id = upload(client, headers).json()["job_id"]
    assert any(job_id in uri for uri in adapters.blobs.objects)
    response = client.delete(f"/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200 and response.json()["state"] == "CANCELLED"
    assert not any(job_id in uri for uri in adapters.blobs.objects)
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 404
    assert client.get("/v1/jobs", headers=headers).json()["jobs"] == []
    # The worker that claims its message later finds it finished.
    assert adapters.status.get(job_id).state is JobState.CANCELLED


def test_a_deleted_finished_job_disappears_from_the_list_and_answers_404_everywhere(adapters, client):
    headers = auth(adapters)
    kept, job_id = (upload(client, headers).json()["job_id"] for _ in range(2))
    run_job(adapters, job_id)
    response = client.delete(f"/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200 and response.json()["state"] == "SUCCEEDED"
    assert [j["job_id"] for j in client.get("/v1/jobs", headers=headers).json()["jobs"]] == [kept]
    assert client.get("/v1/jobs", params={"state": "SUCCEEDED"}, headers=headers).json()["jobs"] == []
    for path in ("", "/result", "/metadata", "/events"):
        assert client.get(f"/v1/jobs/{job_id}{path}", headers=headers).status_code == 404, path
    assert client.delete(f"/v1/jobs/{job_id}", headers=headers).status_code == 404
    assert not any(job_id in uri for uri in adapters.blobs.objects)
    assert any(kept in uri for uri in adapters.blobs.objects)


def test_paging_goes_on_when_the_job_holding_the_cursor_was_deleted_meanwhile(adapters, client):
    headers = auth(adapters)
    ids = [upload(client, headers).json()["job_id"] for _ in range(3)]
    first = client.get("/v1/jobs", params={"limit": 1}, headers=headers).json()
    assert first["next_cursor"] == ids[2]
    client.delete(f"/v1/jobs/{ids[2]}", headers=headers)
    rest = client.get("/v1/jobs", params={"limit": 5, "cursor": first["next_cursor"]}, headers=headers)
    assert rest.status_code == 200 and [j["job_id"] for j in rest.json()["jobs"]] == [ids[1], ids[0]]


def test_cancel_stops_a_queued_job_keeps_it_listed_and_refuses_a_finished_one(adapters, client):
    headers = auth(adapters)
    job_id = upload(client, headers).json()["job_id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert response.status_code == 200 and response.json()["state"] == "CANCELLED"
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).json()["state"] == "CANCELLED"
    assert any(job_id in uri for uri in adapters.blobs.objects)
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert again.status_code == 409 and "CANCELLED" in again.json()["error"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(adapters, "bob")).status_code == 404


def test_a_json_body_submits_a_job_on_an_object_of_the_owners_folder(adapters, client):
    headers = auth(adapters)
    adapters.blobs.write_bytes(f"gs://{BUCKET}/owners/ann/logs/big.log", b"data" * 10)
    response = client.post("/v1/jobs", params={"operation": "compress"},
                           json={"input": f"gs://{BUCKET}/owners/ann/logs/big.log"}, headers=headers)
    assert response.status_code == 202, response.text
    [message] = adapters.queue.messages
    assert message.input_uri == f"gs://{BUCKET}/owners/ann/logs/big.log"
    assert message.output_uri.endswith("/out/big.log.dcz")


@pytest.mark.parametrize("target, code", [
    ("gs://{b}/owners/bob/secret", 403),
    ("gs://other-bucket/owners/ann/x", 403),
    ("gs://{b}/owners/ann/../bob/secret", 403),
    ("gs://{b}/owners/ann/missing", 404),
    ("gs://{b}/jobs/job-20260101-000000-abc/in/x", 404),
])
def test_a_json_body_cannot_name_objects_the_owner_does_not_own(adapters, client, target, code):
    adapters.blobs.write_bytes(f"gs://{BUCKET}/owners/bob/secret", b"s")
    response = client.post("/v1/jobs", params={"operation": "compress"},
                           json={"input": target.format(b=BUCKET)}, headers=auth(adapters))
    assert response.status_code == code, response.text
    assert adapters.queue.messages == []


def test_events_stream_each_change_and_end_at_a_terminal_state(adapters, client):
    headers = auth(adapters)
    job_id = upload(client, headers).json()["job_id"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        events = [next_event(lines)]
        run_job(adapters, job_id)
        while events[-1]["data"]["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            events.append(next_event(lines))
        assert list(lines) == []  # the stream ends
    states = [event["data"]["state"] for event in events]
    assert states[0] == "QUEUED" and states[-1] == "SUCCEEDED"
    assert [event["id"] for event in events] == sorted(event["id"] for event in events)


def test_events_resume_after_the_last_event_id(adapters, client):
    headers = auth(adapters)
    job_id = upload(client, headers).json()["job_id"]
    run_job(adapters, job_id)
    final = adapters.status.get(job_id)
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        event = next_event(response.iter_lines())
    assert event["id"] == final.updated and event["data"]["state"] == "SUCCEEDED"
    # A client that already saw the terminal event gets an empty stream, not the same event again.
    with client.stream("GET", f"/v1/jobs/{job_id}/events",
                       headers={**headers, "Last-Event-ID": final.updated}) as response:
        assert [line for line in response.iter_lines() if line and not line.startswith(":")] == []


def next_event(lines) -> dict:
    event = {}
    for line in lines:
        if line == "" and event:
            return event
        if line.startswith(":") or not line:
            continue
        field, _, value = line.partition(": ")
        event[field] = json.loads(value) if field == "data" else value
    raise AssertionError(f"the stream ended mid-event: {event}")


def test_unknown_routes_and_bad_parameters_answer_json_errors(adapters, client):
    headers = auth(adapters)
    assert client.get("/v1/nothing", headers=headers).json() == {"error": "Not Found", "status": 404}
    response = client.post("/v1/jobs", params={"operation": "explode", "filename": "x"}, headers=headers)
    assert response.status_code == 422 and "operation" in response.json()["error"]


def test_the_openapi_document_describes_the_job_routes(client):
    document = client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/events"} <= set(document["paths"])


# --- the client misbehaves mid-upload: driven at the ASGI level, where a stall and a disconnect can be made


def asgi_upload(app, headers, messages, stall_after=None):
    """POSTs an upload whose body is `messages` (ASGI receive events); returns (status, body)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/jobs", "raw_path": b"/v1/jobs", "root_path": "",
             "query_string": b"operation=compress&filename=s.bin", "server": ("test", 80),
             "client": ("127.0.0.1", 1), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    queue = list(messages)
    sent = []

    async def receive():
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)  # a stalled client: nothing more arrives

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def test_a_client_that_stalls_mid_upload_leaves_no_job_no_object_and_no_slot(adapters):
    app = create_app(adapters, HttpSettings(BUCKET, UploadLimits(stall_timeout=0.2, buffer_size=256 * 1024)))
    piece = {"type": "http.request", "body": b"z" * 300_000, "more_body": True}
    status, body = asgi_upload(app, auth(adapters), [piece, piece])
    assert status == 408, body
    assert adapters.blobs.objects == {} and adapters.blobs.open_uploads == 0
    assert adapters.queue.messages == [] and app.state.slots.in_use == 0
    assert adapters.status.list_jobs("ann")[0] == []


def test_a_client_that_disconnects_mid_upload_leaves_no_job_no_object_and_no_slot(adapters):
    app = create_app(adapters, HttpSettings(BUCKET, UploadLimits(buffer_size=256 * 1024)))
    piece = {"type": "http.request", "body": b"z" * 300_000, "more_body": True}
    asgi_upload(app, auth(adapters), [piece, piece, {"type": "http.disconnect"}])
    assert adapters.blobs.objects == {} and adapters.blobs.open_uploads == 0
    assert adapters.queue.messages == [] and app.state.slots.in_use == 0
    assert adapters.status.list_jobs("ann")[0] == []


def test_an_upload_buffer_that_is_not_whole_resumable_chunks_is_refused():
    with pytest.raises(ValueError, match="256 KiB"):
        UploadLimits(buffer_size=1000)


def test_a_found_key_is_remembered_for_its_ttl_and_an_unknown_one_not_at_all():
    store = InMemoryKeyStore()
    now = [0.0]
    cached = keys.CachedKeys(store, ttl=60, clock=lambda: now[0])
    key = keys.create_key(store, "ann")
    lookups = []
    lookup = store.owner_of
    store.owner_of = lambda h: (lookups.append(h), lookup(h))[1]
    assert cached.owner_of(keys.hash_key("dcas_nope")) is None
    assert cached.owner_of(keys.hash_key("dcas_nope")) is None
    assert [cached.owner_of(keys.hash_key(key)) for _ in range(3)] == ["ann"] * 3
    assert len(lookups) == 3  # two misses, then one lookup for three hits
    now[0] = 61
    assert cached.owner_of(keys.hash_key(key)) == "ann" and len(lookups) == 4


def test_a_revoked_key_is_refused_at_once_though_the_manager_had_remembered_it(adapters, client):
    key, other = (keys.create_key(adapters.keys, "ann") for _ in range(2))
    for k in (key, other):
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {k}"}).status_code == 200
    [revoked] = keys.revoke(adapters.keys, keys.key_id(keys.hash_key(key)))
    assert revoked.owner == "ann"
    response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401 and response.json()["error"] == "unknown API key"
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_revoking_an_owner_revokes_all_their_keys_and_nobody_elses(adapters):
    ann = [keys.create_key(adapters.keys, "ann") for _ in range(2)]
    bob = keys.create_key(adapters.keys, "bob")
    assert [k.owner for k in keys.list_keys(adapters.keys)] == ["ann", "ann", "bob"]
    listed = {k.key_id for k in keys.list_keys(adapters.keys, "ann")}
    assert listed == {keys.key_id(keys.hash_key(k)) for k in ann} and not any(k in str(listed) for k in ann)
    assert {k.key_id for k in keys.revoke(adapters.keys, "ann")} == listed
    assert [keys.authenticate(adapters.keys, f"Bearer {k}") for k in [bob]] == ["bob"]
    for k in ann:
        with pytest.raises(keys.Unauthenticated):
            keys.authenticate(adapters.keys, f"Bearer {k}")
    with pytest.raises(LookupError, match="keys list"):
        keys.revoke(adapters.keys, "ann")


def test_a_lookup_that_overlaps_a_revocation_does_not_cache_the_revoked_key():
    store = InMemoryKeyStore()
    key = keys.create_key(store, "ann")
    cached = keys.CachedKeys(store, ttl=60)
    read = store.owner_of

    def slow_read(key_hash):
        owner = read(key_hash)  # read before the revocation lands
        keys.revoke(store, "ann")
        return owner
    store.owner_of = slow_read
    assert cached.owner_of(keys.hash_key(key)) == "ann"
    store.owner_of = read
    assert cached.owner_of(keys.hash_key(key)) is None


def test_a_job_carries_the_callers_trace_context_or_a_new_one(adapters, client):
    headers = auth(adapters)
    parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    client.post("/v1/jobs", params={"operation": "compress", "filename": "t"}, content=b"x",
                headers={**headers, "traceparent": parent})
    upload(client, headers)
    given, made = adapters.queue.messages
    assert given.trace_context == parent
    assert made.trace_context.startswith("00-") and made.trace_context != parent


def record_write_sizes(adapters) -> list[int]:
    """The sizes of the writes the in-memory blob store's uploads receive from now on, in order."""
    writes: list[int] = []
    open_upload = adapters.blobs.open_upload

    def recording(uri, content_type="application/octet-stream"):
        upload = open_upload(uri, content_type)
        write = upload.write
        upload.write = lambda data: (writes.append(len(data)), write(data))[1]
        return upload
    adapters.blobs.open_upload = recording
    return writes


def test_an_upload_reaches_storage_in_whole_buffers_never_the_whole_file(adapters):
    client = make_client(adapters, buffer_size=256 * 1024)
    writes = record_write_sizes(adapters)
    data = bytes(range(256)) * 4000 + b"!"  # 1 MB: 3 whole buffers and a tail
    chunks = (data[i:i + 70_000] for i in range(0, len(data), 70_000))
    response = client.post("/v1/jobs", params={"operation": "compress", "filename": "f"}, content=chunks,
                           headers=auth(adapters))
    assert response.status_code == 202
    assert writes[:-1] == [256 * 1024] * 3 and 0 < writes[-1] < 256 * 1024 and sum(writes) == len(data)


def test_a_direct_upload_goes_to_storage_without_us_and_is_queued_when_confirmed(adapters, client):
    headers = auth(adapters)
    opened = client.post("/v1/uploads", params={"operation": "compress", "filename": "huge.log", "size": 5},
                         headers=headers)
    assert opened.status_code == 201, opened.text
    body = opened.json()
    confirm = body["complete_url"].removeprefix("http://testserver")
    assert client.post(confirm, headers=headers).status_code == 409  # nothing uploaded yet
    assert client.post(confirm, headers=auth(adapters, "bob")).status_code == 404
    adapters.blobs.finish_session(body["upload_url"], b"hello")  # the client's PUT, straight to storage
    accepted = client.post(confirm, headers=headers)
    assert accepted.status_code == 202 and accepted.json()["job_id"] == body["job_id"]
    [message] = adapters.queue.messages
    assert message.input_uri.endswith(f"/jobs/{body['job_id']}/in/huge.log") and message.table_uri is None
    assert not any("/uploads/" in uri for uri in adapters.blobs.objects)
    assert client.post(confirm, headers=headers).status_code == 404  # confirmed once


def test_a_direct_upload_over_the_limit_is_refused_when_declared_or_found(adapters):
    client = make_client(adapters, max_size=10)
    headers = auth(adapters)
    declared = client.post("/v1/uploads", params={"operation": "compress", "size": 11}, headers=headers)
    assert declared.status_code == 422 and "10" in declared.json()["error"]  # the schema states the limit
    body = client.post("/v1/uploads", params={"operation": "compress"}, headers=headers).json()
    adapters.blobs.finish_session(body["upload_url"], b"x" * 11)
    assert client.post(body["complete_url"].removeprefix("http://testserver"), headers=headers).status_code == 413
    assert adapters.blobs.objects == {} and adapters.queue.messages == []
