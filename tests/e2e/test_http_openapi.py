"""The served OpenAPI document, checked by schemathesis against the live app (uvicorn, in-memory ports)."""
from __future__ import annotations

import types

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from adapters.memory import InMemoryBlobStore, InMemoryJobQueue, InMemoryKeyStore, InMemoryStatusStore
from services import keys
from services.http import HttpSettings, create_app
from services.uploads import UploadLimits
from http_server import running_server  # tests/ is on sys.path

_live: dict = {}


@pytest.fixture(scope="module")
def live_app():
    adapters = types.SimpleNamespace(queue=InMemoryJobQueue(), status=InMemoryStatusStore(),
                                     blobs=InMemoryBlobStore(), keys=InMemoryKeyStore())
    key = keys.create_key(adapters.keys, "ann")
    app = create_app(adapters, HttpSettings("bkt", UploadLimits(max_size=2**20, stall_timeout=5)))
    with running_server(app) as url:
        _live.update(url=url, key=key)
        yield url


def test_every_operation_answers_as_its_schema_says(live_app):
    # Driven by hand rather than through schemathesis' pytest plugin, which does not run under
    # this pytest (it reads a private attribute pytest 9 removed).
    api = schemathesis.openapi.from_url(f"{live_app}/openapi.json")
    headers = {"Authorization": f"Bearer {_live['key']}"}
    checked = []
    for result in api.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/events"):
            continue  # a stream that stays open for a live job; its own tests cover it

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(headers=headers)

        check()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) >= 5, checked


def test_the_openapi_document_is_served_with_the_job_routes(live_app):
    document = httpx.get(f"{live_app}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result"} <= set(document["paths"])
