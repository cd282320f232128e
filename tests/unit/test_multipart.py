"""multipart/form-data uploads: the file part streamed to storage with its name, the same limits as a raw body."""
from __future__ import annotations

import asyncio
import types

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import codec
from adapters.memory import InMemoryBlobStore, InMemoryJobQueue, InMemoryKeyStore, InMemoryStatusStore
from adapters.messages import decode_frequency_table
from services import keys, multipart
from services.http import HttpSettings, create_app
from services.uploads import UploadLimits
from test_http_api import record_write_sizes  # tests/unit is on sys.path (pytest prepend import mode)

BUCKET = "bkt"
BOUNDARY = "----dcas-test-boundary-7MA4YWxkTrZu0gW"


def body(*parts: tuple[dict[str, str], bytes], close: bool = True) -> bytes:
    out = b""
    for headers, data in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        out += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n" + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def file_part(name: str, data: bytes, field: str = "file") -> tuple[dict[str, str], bytes]:
    return {"Content-Disposition": f'form-data; name="{field}"; filename="{name}"',
            "Content-Type": "application/octet-stream"}, data


def text_field(name: str, value: str) -> tuple[dict[str, str], bytes]:
    return {"Content-Disposition": f'form-data; name="{name}"'}, value.encode()


@pytest.fixture
def adapters():
    return types.SimpleNamespace(queue=InMemoryJobQueue(), status=InMemoryStatusStore(), blobs=InMemoryBlobStore(),
                                 keys=InMemoryKeyStore())


def client_and_headers(adapters, **limits):
    settings = HttpSettings(BUCKET, UploadLimits(**{"buffer_size": 256 * 1024, **limits}))
    headers = {"Authorization": f"Bearer {keys.create_key(adapters.keys, 'ann')}",
               "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return TestClient(create_app(adapters, settings)), headers


def post(client, headers, content, **params):
    return client.post("/v1/jobs", params={"operation": "compress", **params}, content=content, headers=headers)


def test_the_file_part_is_stored_under_its_own_name_with_its_histogram(adapters):
    client, headers = client_and_headers(adapters)
    data = bytes(range(256)) * 1000 + b"\r\n--not-the-boundary\r\n" + b"tail"
    response = post(client, headers, body(text_field("note", "skipped"), file_part("../../report.csv", data)))
    assert response.status_code == 202, response.text
    [message] = adapters.queue.messages
    assert message.input_uri == f"gs://{BUCKET}/jobs/{message.job_id}/in/report.csv"
    assert adapters.blobs.objects[message.input_uri] == data
    table = decode_frequency_table(adapters.blobs.objects[message.table_uri])
    np.testing.assert_array_equal(table, codec.histogram(data))


def test_a_filename_in_the_query_wins_over_the_parts(adapters):
    client, headers = client_and_headers(adapters)
    assert post(client, headers, body(file_part("a.bin", b"x")), filename="b.bin").status_code == 202
    assert adapters.queue.messages[0].input_uri.endswith("/in/b.bin")


def test_a_large_multipart_body_reaches_storage_in_whole_buffers_as_it_streams(adapters):
    client, headers = client_and_headers(adapters)
    writes = record_write_sizes(adapters)
    data = np.random.default_rng(7).integers(0, 256, 3 * 2**20 + 123, dtype=np.uint8).tobytes()
    whole = body(file_part("big.bin", data))
    pieces = (whole[i:i + 50_000] for i in range(0, len(whole), 50_000))
    assert post(client, headers, pieces).status_code == 202
    [message] = adapters.queue.messages
    assert adapters.blobs.objects[message.input_uri] == data
    assert writes[:-1] == [256 * 1024] * (len(data) // (256 * 1024)) and sum(writes) == len(data)


@pytest.mark.parametrize("content, code, why", [
    (body(text_field("note", "no file")), 400, "no file part"),
    (body(file_part("a", b"1"), file_part("b", b"2")), 400, "one file part"),
    (body(file_part("a", b"cut short"), close=False), 400, "closing boundary"),
    (body(file_part("big", b"x" * 2000)), 413, "limit"),
])
def test_bad_or_oversized_multipart_bodies_are_refused_and_leave_nothing(adapters, content, code, why):
    client, headers = client_and_headers(adapters, max_size=1000)
    response = post(client, headers, iter([content]))  # streamed: no Content-Length to judge by
    assert response.status_code == code and why in response.json()["error"], response.text
    assert adapters.blobs.objects == {} and adapters.queue.messages == [] and adapters.blobs.open_uploads == 0


def test_a_declared_length_far_over_the_limit_is_refused_before_reading(adapters):
    client, headers = client_and_headers(adapters, max_size=1000)
    response = post(client, {**headers, "Content-Length": str(1000 + multipart.OVERHEAD + 1)}, b"")
    assert response.status_code == 413 and adapters.blobs.open_uploads == 0


def test_a_boundary_is_required(adapters):
    client, headers = client_and_headers(adapters)
    response = post(client, {**headers, "Content-Type": "multipart/form-data"}, body(file_part("a", b"x")))
    assert response.status_code == 400 and "boundary" in response.json()["error"]


def test_the_parser_finds_the_file_whatever_the_chunking():
    data = b"\r\n--" + BOUNDARY.encode()[:-1] + b"x\r\n" + bytes(range(256)) * 4
    whole = body(text_field("a", "b"), file_part("f.txt", data))

    async def parse(step: int) -> tuple[str, bytes, int]:
        async def chunks():
            for i in range(0, len(whole), step):
                yield whole[i:i + step]
        name, pieces = await multipart.file_part(chunks(), f"multipart/form-data; boundary={BOUNDARY}", 5)
        received = [piece async for piece in pieces]
        return name, b"".join(received), max(map(len, received))

    for step in (1, 7, 64, len(whole)):
        name, got, largest = asyncio.run(parse(step))
        # A piece is at most one chunk plus what the parser held back as a possible boundary.
        assert (name, got) == ("f.txt", data) and largest <= step + len(BOUNDARY) + 8


def test_httpx_files_make_a_body_the_manager_takes(adapters):
    client, headers = client_and_headers(adapters)
    headers.pop("Content-Type")
    request = httpx.Request("POST", "http://x", files={"file": ("notes.txt", b"hello multipart")})
    response = post(client, {**headers, "Content-Type": request.headers["content-type"]}, request.read())
    assert response.status_code == 202, response.text
    [message] = adapters.queue.messages
    assert message.input_uri.endswith("/in/notes.txt") and adapters.blobs.objects[message.input_uri] == b"hello multipart"


def test_fields_before_the_file_are_bounded_so_a_client_cannot_hold_on_with_them():
    whole = body(text_field("padding", "p" * 2 * multipart.OVERHEAD), file_part("late", b"x"))

    async def parse():
        async def chunks():
            for i in range(0, len(whole), 4096):
                yield whole[i:i + 4096]
        await multipart.file_part(chunks(), f"multipart/form-data; boundary={BOUNDARY}", 5)

    with pytest.raises(ValueError, match="first 65536 bytes"):
        asyncio.run(parse())


def test_a_client_that_stalls_before_the_file_part_gets_the_stall_error():
    from services.uploads import UploadStalled

    async def stalling():
        yield f"--{BOUNDARY}\r\nContent-Disposition: form-da".encode()
        await asyncio.sleep(30)

    with pytest.raises(UploadStalled, match="no data for 0.1 s"):
        asyncio.run(multipart.file_upload(stalling(), f"multipart/form-data; boundary={BOUNDARY}", None,
                                          UploadLimits(buffer_size=256 * 1024, stall_timeout=0.1)))
