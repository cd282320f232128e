"""`dcas setup`'s bucket role bindings through the real Cloud Storage client, against gcp-storage-emulator (it keeps bucket IAM policies; fake-gcs-server has none)."""
from __future__ import annotations

import uuid

import pytest

from adapters import provisioning
from adapters.iam import Binding, GoogleIam, granted
from emulators import start_gcp_storage_emulator
from services import setup
from services.config import Settings

CONDITION = {"title": "until 2030", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}
CAROL = "user:carol@example.com"


@pytest.fixture(scope="module")
def storage_with_iam():
    emulator = start_gcp_storage_emulator()
    try:
        yield emulator.env["STORAGE_EMULATOR_HOST"]
    finally:
        emulator.stop()


@pytest.fixture
def bucket(storage_with_iam, monkeypatch):
    """A fresh bucket on gcp-storage-emulator holding someone else's grants, one of them conditional."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage_with_iam)
    from google.cloud import storage
    bucket = storage.Client(project="dcas-prod").create_bucket(f"dcas-iam-{uuid.uuid4().hex[:8]}")
    policy = bucket.get_iam_policy(requested_policy_version=3)
    policy.version = 3
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {CAROL}})
    policy.bindings.append({"role": "roles/storage.objectAdmin", "members": {CAROL}, "condition": CONDITION})
    bucket.set_iam_policy(policy)
    return bucket


def bucket_bindings(name: str) -> list[provisioning.Resource]:
    settings = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "dcas-prod", "DCAS_BUCKET": name})
    return [r for r in setup.plan(settings) if r.kind == "iam-binding" and r.settings["resource"] == f"gs://{name}"]


def test_setup_grants_the_bucket_roles_then_finds_them_ok_and_someone_elses_grants_survive(bucket):
    resources = bucket_bindings(bucket.name)
    assert {r.settings["member"] for r in resources} == {
        "serviceAccount:dcas-http@dcas-prod.iam.gserviceaccount.com",
        "serviceAccount:dcas-dataflow@dcas-prod.iam.gserviceaccount.com"}
    iam = GoogleIam()
    try:
        assert [o.action for o in setup.apply(resources, dry_run=True, iam=iam)] == ["would create"] * 2
        assert not any(b["role"] == "roles/storage.objectAdmin" and not b.get("condition")
                       for b in bucket.get_iam_policy(requested_policy_version=3).bindings)
        assert [o.action for o in setup.apply(resources, iam=iam)] == ["created"] * 2
        assert [o.action for o in setup.apply(resources, iam=iam)] == ["ok"] * 2
        policy = iam.get_policy(f"gs://{bucket.name}")
    finally:
        iam.close()
    for resource in resources:
        assert granted(policy, Binding("roles/storage.objectAdmin", resource.settings["member"]))
    assert granted(policy, Binding("roles/storage.objectViewer", CAROL))
    assert {"role": "roles/storage.objectAdmin", "members": [CAROL], "condition": CONDITION} in policy["bindings"]
    assert policy["version"] == 3
