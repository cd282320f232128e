"""IAM for `dcas setup`: bindings merged into policies (pure), and the service accounts and bindings applied through an in-memory IamAdmin."""
from __future__ import annotations

import pytest
from google.api_core import exceptions

from adapters import provisioning
from adapters.iam import Binding, add_bindings, granted, policy_from_proto, policy_to_proto
from adapters.memory import InMemoryIam
from services import setup
from services.config import Settings

REAL = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "dcas-prod", "DCAS_BUCKET": "dcas-prod-data"})
HTTP = "serviceAccount:dcas-http@dcas-prod.iam.gserviceaccount.com"
CONDITION = {"title": "until 2030", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}


def foreign_policy() -> dict:
    """A project policy as someone else left it: an owner, a viewer role with two members, a
    conditional grant of the very role we want, and audit logging."""
    return {"version": 3, "etag": "BwYd1Qk=", "bindings": [
        {"role": "roles/owner", "members": ["user:ann@example.com"]},
        {"role": "roles/viewer", "members": ["group:ops@example.com", "user:bob@example.com"]},
        {"role": "roles/datastore.user", "members": [HTTP], "condition": CONDITION},
    ], "auditConfigs": [{"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}]}


def test_a_missing_binding_is_added_and_every_foreign_binding_condition_and_the_etag_are_kept():
    before = foreign_policy()
    after, added = add_bindings(before, [Binding("roles/datastore.user", HTTP), Binding("roles/viewer", HTTP)])
    assert added == [Binding("roles/datastore.user", HTTP), Binding("roles/viewer", HTTP)]
    assert before == foreign_policy()  # the policy read is not modified
    assert after["etag"] == before["etag"] and after["auditConfigs"] == before["auditConfigs"]
    assert after["bindings"][:2] == [before["bindings"][0], {**before["bindings"][1],
                                                            "members": before["bindings"][1]["members"] + [HTTP]}]
    # The conditional grant is not what was asked for: kept as it is, and an unconditional one added beside it.
    assert after["bindings"][2] == before["bindings"][2]
    assert after["bindings"][3] == {"role": "roles/datastore.user", "members": [HTTP]}
    assert granted(after, Binding("roles/datastore.user", HTTP))
    assert not granted(before, Binding("roles/datastore.user", HTTP))


def test_merging_again_adds_nothing_and_returns_the_same_policy():
    once, _ = add_bindings(foreign_policy(), [Binding("roles/cloudtrace.agent", HTTP)])
    twice, added = add_bindings(once, [Binding("roles/cloudtrace.agent", HTTP), Binding("roles/cloudtrace.agent", HTTP)])
    assert added == [] and twice == once


def test_a_policy_that_holds_a_condition_is_written_as_version_3_and_an_empty_one_gets_its_first_binding():
    conditional = {"version": 1, "etag": "e", "bindings": [{"role": "roles/x", "members": ["user:a@b.c"],
                                                            "condition": CONDITION}]}
    assert add_bindings(conditional, [Binding("roles/y", HTTP)])[0]["version"] == 3
    fresh, added = add_bindings({"etag": "ACAB"}, [Binding("roles/y", HTTP)])
    assert fresh == {"etag": "ACAB", "bindings": [{"role": "roles/y", "members": [HTTP]}]} and len(added) == 1


def test_a_pubsub_policy_message_converts_to_the_json_shape_and_back_with_its_condition_and_etag():
    policy = {**foreign_policy(), "etag": "AAECAw=="}
    message = policy_to_proto(policy)
    assert message.etag == b"\x00\x01\x02\x03" and message.bindings[2].condition.title == "until 2030"
    assert policy_from_proto(message) == policy


@pytest.fixture
def no_waits(monkeypatch):
    monkeypatch.setattr(provisioning, "IAM_RETRY_DELAYS", (0.0, 0.0, 0.0))


def iam_resources(settings: Settings = REAL):
    return [r for r in setup.plan(settings) if r.kind in provisioning.IAM_KINDS]


def test_setup_creates_the_accounts_and_grants_every_role_then_finds_all_ok_and_writes_nothing():
    iam = InMemoryIam("dcas-prod", number="4242")
    first = setup.apply(iam_resources(), iam=iam)
    assert {o.action for o in first} == {"created"}
    assert set(iam.accounts) == {f"{a}@dcas-prod.iam.gserviceaccount.com"
                                 for a in ("dcas-http", "dcas-dataflow", "dcas-reconciler")}
    for resource in (r for r in iam_resources() if r.kind == "iam-binding"):
        member = resource.settings["member"].format(project_number="4242")
        assert granted(iam.policies[resource.settings["resource"]], Binding(resource.settings["role"], member))
    agent = "serviceAccount:service-4242@gcp-sa-pubsub.iam.gserviceaccount.com"
    assert granted(iam.policies[REAL.dead_letter_topic], Binding("roles/pubsub.publisher", agent))
    writes = len(iam.writes)
    second = setup.apply(iam_resources(), iam=iam)
    assert {o.action for o in second} == {"ok"} and len(iam.writes) == writes


def test_setup_leaves_other_peoples_bindings_and_conditions_on_the_project_as_they_were():
    iam = InMemoryIam("dcas-prod")
    iam.policies["projects/dcas-prod"] = foreign_policy()
    setup.apply(iam_resources(), iam=iam)
    after = iam.policies["projects/dcas-prod"]
    for entry in foreign_policy()["bindings"]:
        assert entry in after["bindings"]
    assert after["auditConfigs"] == foreign_policy()["auditConfigs"] and after["version"] == 3


def test_a_dry_run_reads_and_says_what_it_would_create_but_writes_nothing():
    iam = InMemoryIam("dcas-prod")
    iam.policies["projects/dcas-prod"] = {"etag": "e", "bindings": [{"role": "roles/datastore.user", "members": [HTTP]}]}
    outcomes = {o.resource.name: o.action for o in setup.apply(iam_resources(), iam=iam, dry_run=True)}
    assert iam.writes == []
    assert outcomes["roles/datastore.user on projects/dcas-prod for dcas-http"] == "ok"
    assert outcomes["roles/cloudtrace.agent on projects/dcas-prod for dcas-http"] == "would create"
    assert outcomes["dcas-http@dcas-prod.iam.gserviceaccount.com"] == "would create"


def test_with_print_iam_nothing_is_called_and_each_resource_is_a_gcloud_command():
    iam = InMemoryIam("dcas-prod")
    iam.errors = {"projects/dcas-prod": AssertionError("called")}
    outcomes = setup.apply(iam_resources(), iam=iam, print_iam=True)
    assert {o.action for o in outcomes} == {"manual"} and iam.writes == []
    assert all(o.detail.startswith("run: gcloud ") and "dcas-prod" in o.detail for o in outcomes)


def test_a_permission_denied_is_one_failed_line_naming_the_role_needed_and_the_rest_is_still_applied():
    iam = InMemoryIam("dcas-prod")
    iam.errors = {"projects/dcas-prod": exceptions.Forbidden(
        "Policy update access denied.\n  (resourcemanager.projects.setIamPolicy)")}
    outcomes = setup.apply(iam_resources(), iam=iam)
    failed = setup.failed(outcomes)
    on_project = [o for o in outcomes if o.resource.settings.get("resource") == "projects/dcas-prod"]
    # The project's bindings, and the Pub/Sub agent's (its member needs the project's number).
    agent = [o for o in outcomes if o.resource.name.endswith("for pubsub-agent")]
    assert sorted(o.resource.name for o in failed) == sorted(o.resource.name for o in on_project + agent)
    for outcome in on_project:
        line = setup.format_outcome(outcome)
        assert "\n" not in line and line.startswith("failed")
        assert "403 Policy update access denied. (resourcemanager.projects.setIamPolicy)" in line
        assert "roles/resourcemanager.projectIamAdmin" in line
    assert {o.action for o in outcomes if o.action != "failed"} == {"created"}
    assert granted(iam.policies["gs://dcas-prod-data"], Binding("roles/storage.objectAdmin", HTTP))


def test_no_credentials_fails_each_iam_resource_in_one_line_without_a_traceback(monkeypatch):
    from google.auth import exceptions as auth

    class NoCredentials(InMemoryIam):
        def service_account(self, email):
            raise auth.DefaultCredentialsError("Your default credentials were not found.")

        get_policy = project_number = service_account

    outcomes = setup.apply(iam_resources(), iam=NoCredentials())
    assert {o.action for o in outcomes} == {"failed"}
    assert {o.detail for o in outcomes} == {"no Google credentials: run `gcloud auth application-default login`"}


class ChangedMeanwhile(InMemoryIam):
    """Someone else writes each policy once between our read and our write."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.raced: set[str] = set()

    def get_policy(self, resource):
        policy = super().get_policy(resource)
        if resource not in self.raced:
            self.raced.add(resource)
            theirs, _ = add_bindings(policy, [Binding("roles/viewer", "user:carol@example.com")])
            super().set_policy(resource, theirs)
        return policy


def test_a_policy_changed_between_read_and_write_is_read_again_and_the_other_change_is_kept(no_waits):
    iam = ChangedMeanwhile("dcas-prod")
    outcomes = setup.apply(iam_resources(), iam=iam)
    assert {o.action for o in outcomes} == {"created"}
    for resource, policy in iam.policies.items():
        assert granted(policy, Binding("roles/viewer", "user:carol@example.com")), resource


def test_a_binding_for_an_account_iam_does_not_see_yet_is_tried_again_and_then_reported(no_waits):
    iam = InMemoryIam("dcas-prod")
    [account] = [r for r in iam_resources() if r.name.startswith("dcas-reconciler@")]
    binding = next(r for r in iam_resources() if r.name == "roles/datastore.user on projects/dcas-prod for dcas-reconciler")
    outcome = setup.apply([binding], iam=iam)[0]  # the account was never created: every try is refused
    assert outcome.action == "failed" and "does not exist" in outcome.detail
    assert iam.writes == []

    class SlowToSee(InMemoryIam):
        refusals = 2

        def set_policy(self, resource, policy):
            if self.refusals:
                self.refusals -= 1
                raise exceptions.BadRequest("Service account dcas-reconciler@dcas-prod.iam.gserviceaccount.com "
                                            "does not exist.")
            return super().set_policy(resource, policy)

    iam = SlowToSee("dcas-prod")
    assert [o.action for o in setup.apply([account, binding], iam=iam)] == ["created", "created"]
    assert iam.refusals == 0


def test_on_the_emulators_iam_is_skipped_without_calling_anything():
    local = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "dcas-local", "PUBSUB_EMULATOR_HOST": "127.0.0.1:1"})
    iam = InMemoryIam("dcas-local")
    iam.errors = {"projects/dcas-local": AssertionError("called")}
    outcomes = setup.apply(iam_resources(local), iam=iam)
    assert {o.action for o in outcomes} == {"skipped"} and iam.writes == [] and iam.accounts == {}


def test_an_account_another_run_creates_between_our_look_and_our_create_is_ok():
    [account] = [r for r in iam_resources() if r.name.startswith("dcas-http@")]

    class Raced(InMemoryIam):
        def service_account(self, email):
            found = super().service_account(email)
            self.accounts.setdefault(email, {"email": email})  # the other run creates it just after our look
            return found

    iam = Raced("dcas-prod")
    assert setup.apply([account], iam=iam)[0].action == "ok" and iam.writes == []


def test_dcas_setup_prints_a_failed_line_per_refused_resource_then_exits_1_with_one_error_line(monkeypatch):
    import io

    import adapters.iam
    from services import cli
    iam = InMemoryIam("dcas-prod")
    iam.errors = {"gs://dcas-prod-data": exceptions.Forbidden("caller does not have storage.buckets.setIamPolicy")}
    monkeypatch.setattr(adapters.iam, "GoogleIam", lambda *args, **kwargs: iam)  # our port, in memory
    resources = iam_resources()  # the real project's IAM only: nothing else would be reachable here
    monkeypatch.setattr(setup, "plan", lambda *args, iam=True: resources if iam else [])
    stdout, stderr = io.StringIO(), io.StringIO()
    assert cli.main(["setup"], stdout=stdout, stderr=stderr) == 1
    lines = stdout.getvalue().splitlines()
    failed = [line for line in lines if line.startswith("failed")]
    assert len(failed) == 2 and all("gs://dcas-prod-data" in line and "roles/storage.admin" in line for line in failed)
    assert lines[-1] == f"{len(resources)} resources: {len(resources) - 2} created, 2 failed"
    assert stderr.getvalue() == (f"dcas: error: 2 of {len(resources)} resources could not be applied "
                                 "(the `failed` lines above say why)\n")
