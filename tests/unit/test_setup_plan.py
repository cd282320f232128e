"""`dcas setup`'s plan (pure) and the reconciler's entry point, over the in-memory fakes: no emulator, no cloud."""
from __future__ import annotations

import datetime
import json
import pathlib
import threading

import pytest

from adapters import provisioning
from adapters.jobs import JobState, JobStatus
from adapters.memory import InMemoryJobQueue, InMemoryStatusStore
from adapters.provisioning import Resource
from adapters.storage import temp_dir_for
from services import jobs, setup
from services.bootstrap import Adapters
from services.config import Settings
from services.reconciler import Action, run_reconciler
from services.uploads import job_paths, pending_record

ROOT = pathlib.Path(__file__).resolve().parents[2]
REAL = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "dcas-prod", "DCAS_BUCKET": "dcas-prod-data"})
LOCAL = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "dcas-local", "PUBSUB_EMULATOR_HOST": "127.0.0.1:1",
                           "FIRESTORE_EMULATOR_HOST": "127.0.0.1:2", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:3"})


def by_name(resources) -> dict[str, Resource]:
    return {r.name: r for r in resources}


def test_the_plan_makes_each_topic_before_the_subscriptions_that_read_or_dead_letter_into_it():
    resources = setup.plan(REAL)
    position = {r.name: i for i, r in enumerate(resources)}
    for sub in (r for r in resources if r.kind == "subscription"):
        assert position[sub.settings["topic"]] < position[sub.name]
        policy = sub.settings["dead_letter_policy"]
        if policy:
            assert position[policy["dead_letter_topic"]] < position[sub.name]
    topic = by_name(resources)[REAL.jobs_topic]
    assert position[topic.settings["schema"]] < position[topic.name]


def test_the_pipelines_subscription_dead_letters_into_the_settings_dead_letter_topic_which_has_its_own_subscription():
    plan = by_name(setup.plan(REAL))
    pipeline = plan[REAL.jobs_subscription].settings
    assert pipeline["topic"] == REAL.jobs_topic
    assert pipeline["dead_letter_policy"]["dead_letter_topic"] == REAL.dead_letter_topic
    assert 5 <= pipeline["dead_letter_policy"]["max_delivery_attempts"] <= 100
    assert pipeline["retry_policy"]["minimum_backoff"] < pipeline["retry_policy"]["maximum_backoff"]
    assert plan[REAL.dead_letter_subscription].settings["topic"] == REAL.dead_letter_topic
    # Pub/Sub's default deletes a subscription after 31 days without a reader: neither may expire.
    assert pipeline["expires_after"] is None and plan[REAL.dead_letter_subscription].settings["expires_after"] is None
    assert plan[REAL.jobs_topic].settings == {"schema": "projects/dcas-prod/schemas/dcas-job-v1", "encoding": "JSON"}


def matches(rule: dict, name: str) -> bool:
    """GCS's matching of one lifecycle rule's name conditions (any prefix and any suffix)."""
    condition = rule["condition"]
    return (any(name.startswith(p) for p in condition.get("matchesPrefix", [""]))
            and any(name.endswith(s) for s in condition.get("matchesSuffix", [""])))


def deleted_by(rules: list[dict], uri: str) -> list[dict]:
    name = uri.removeprefix("gs://").partition("/")[2]
    return [r for r in rules if r["action"]["type"] == "Delete" and matches(r, name)]


def test_the_lifecycle_rules_delete_the_temp_parts_the_code_writes_and_abandoned_upload_records_only():
    rules = setup.lifecycle_rules(setup.SetupOptions(temp_days=3, upload_days=5, output_prefixes=("dcz/2026-11/",)))
    root_part = temp_dir_for("gs://b/big.log.dcz", "job1") + "big.log.dcz.part-00007"
    prefixed_part = temp_dir_for("gs://b/dcz/2026-11/big.log.dcz", "job1", attempt=2) + "big.log.dcz.part-00000"
    assert [r["condition"]["age"] for r in deleted_by(rules, root_part)] == [3]
    assert [r["condition"]["age"] for r in deleted_by(rules, prefixed_part)] == [3]
    paths = job_paths("b", "job1", "big.log", "compress")
    assert [r["condition"]["age"] for r in deleted_by(rules, pending_record("b", "job1"))] == [5]
    for kept in (paths.input, paths.table, paths.output, paths.metadata, "gs://b/dcz/2026-11/big.log.dcz",
                 "gs://b/owners/ann/upload.json"):
        assert deleted_by(rules, kept) == [], kept


def test_job_retention_is_off_unless_asked_and_then_covers_everything_under_the_managers_job_folders():
    paths = job_paths("b", "job1", "big.log", "compress")
    kept = setup.lifecycle_rules(setup.SetupOptions())
    temp_of_a_job = temp_dir_for(paths.output, "job1") + "big.log.dcz.part-00000"
    assert deleted_by(kept, temp_of_a_job) == []  # GCS cannot match a .dcas-tmp/ below a per-job folder
    retained = setup.lifecycle_rules(setup.SetupOptions(jobs_retention_days=30))
    for uri in (paths.input, paths.output, temp_of_a_job):
        assert 30 in [r["condition"]["age"] for r in deleted_by(retained, uri)]
    assert deleted_by(retained, "gs://b/owners/ann/x.log") == []


@pytest.mark.parametrize("field, value", [("temp_days", 0), ("upload_days", -1), ("jobs_retention_days", 0),
                                          ("max_delivery_attempts", 4), ("ack_deadline", 5)])
def test_setup_options_out_of_bounds_are_refused_with_the_reason(field, value):
    with pytest.raises(ValueError, match="must be"):
        setup.SetupOptions(**{field: value})


def test_the_committed_firestore_indexes_file_is_the_one_setup_creates():
    committed = json.loads((ROOT / "deploy" / "firestore.indexes.json").read_text())
    assert committed == setup.firestore_indexes_json("jobs")
    indexes = by_name(setup.plan(REAL))["projects/dcas-prod/databases/(default)/collectionGroups/jobs"]
    assert [[list(f.values()) for f in i["fields"]] for i in committed["indexes"]] == indexes.settings["indexes"]


def test_every_indexed_field_is_one_the_status_documents_hold():
    status = JobStatus.queued(jobs.new_request("gs://b/in", "gs://b/out", owner="ann")).to_dict()
    for index in setup.firestore_indexes_json()["indexes"]:
        for field in index["fields"]:
            value = status
            for part in field["fieldPath"].split("."):
                value = value[part]  # KeyError: the index names a field no document has


def test_every_component_has_its_own_account_with_scoped_roles_and_no_broad_one():
    resources = setup.plan(REAL)
    accounts = {r.name.split("@")[0] for r in resources if r.kind == "service-account"}
    assert accounts == {"dcas-http", "dcas-dataflow", "dcas-reconciler"}
    bindings = [r for r in resources if r.kind == "iam-binding"]
    for binding in bindings:
        role = binding.name.split()[0]
        assert role not in ("roles/owner", "roles/editor", "roles/storage.admin", "roles/pubsub.admin")
        if role.startswith(("roles/storage.", "roles/pubsub.")):
            assert " on projects/dcas-prod for " not in binding.name, binding.name  # granted on the resource, not the project
    reconciler = {b.name.split()[0] for b in bindings if b.name.endswith("for dcas-reconciler")}
    assert reconciler == {"roles/pubsub.publisher", "roles/datastore.user"}


def test_the_identities_whose_processes_export_spans_may_write_them_to_cloud_trace_and_no_other():
    tracers = {account for account, identity in setup.IDENTITIES.items()
               if ("roles/cloudtrace.agent", "project") in identity["roles"]}
    assert tracers == {"dcas-http", "dcas-dataflow"}  # the Manager/Status services and the pipelines' workers


def test_each_iam_resource_names_the_role_its_applier_needs_and_the_doc_lists_them():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for resource in (r for r in setup.plan(REAL) if r.kind in provisioning.IAM_KINDS):
        assert resource.settings["admin_role"] in doc, resource.name


def test_the_operations_doc_lists_each_account_with_the_roles_setup_grants():
    doc = (ROOT / "docs" / "operations.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in doc.splitlines() if line.startswith("| `")}
    for account, identity in setup.IDENTITIES.items():
        row = rows[account]
        for role, _ in identity["roles"]:
            assert role in row, (account, role)


def test_on_the_emulators_iam_and_indexes_are_skipped_and_said_so_and_on_a_project_iam_prints_as_gcloud_commands():
    local = [r for r in setup.plan(LOCAL) if r.kind in ("service-account", "iam-binding", "firestore-indexes")]
    outcomes = [provisioning.apply_resource(r) for r in local]
    assert {o.action for o in outcomes} == {"skipped"}
    assert all("skipped on the emulator" in o.detail for o in outcomes)
    real = [r for r in setup.plan(REAL) if r.kind in ("service-account", "iam-binding")]
    for outcome in (provisioning.iam_command(r) for r in real):
        assert outcome.action == "manual" and outcome.detail.startswith("run: gcloud ")
        assert "dcas-prod" in outcome.detail


def test_iam_can_be_left_out_of_the_plan():
    kinds = {r.kind for r in setup.plan(REAL, iam=False)}
    assert kinds == {"schema", "topic", "subscription", "bucket", "firestore-indexes"}


def test_an_outcome_line_names_the_action_the_kind_the_resource_and_the_drift():
    outcome = provisioning.Outcome(Resource("subscription", "projects/p/subscriptions/s"), "updated",
                                   "ack_deadline_seconds: 30 -> 60")
    line = setup.format_outcome(outcome)
    assert line.split()[:3] == ["updated", "subscription", "projects/p/subscriptions/s"]
    assert line.endswith("(ack_deadline_seconds: 30 -> 60)")
    assert setup.summary([outcome, outcome]) == "2 resources: 2 updated"


def stuck_queued(settings: Settings) -> Adapters:
    """A job QUEUED (and published) 30 s ago that nobody has claimed since."""
    adapters = Adapters(InMemoryJobQueue(), InMemoryStatusStore(), settings=settings)
    request = jobs.new_request("gs://b/in", "gs://b/out.dcz", job_id="job-1", owner="ann")
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=30)).isoformat(
        timespec="microseconds")
    adapters.status.create(JobStatus.from_dict({**JobStatus.queued(request).to_dict(), "updated": old}))
    adapters.queue.publish(request)
    return adapters


def test_one_reconcile_pass_publishes_a_job_stuck_queued_again_and_reports_it():
    adapters = stuck_queued(Settings(queued_timeout=10))
    seen = []
    assert run_reconciler(adapters, on_action=seen.append) == 1
    assert seen == [Action("job-1", "republished", 1)]
    assert [m.job_id for m in adapters.queue.messages] == ["job-1", "job-1"]
    assert adapters.status.get("job-1").state is JobState.QUEUED


def test_the_reconcile_loop_publishes_a_stuck_job_once_per_timeout_not_once_per_pass_and_stops_when_told():
    adapters = stuck_queued(Settings(queued_timeout=10))
    stop = threading.Event()
    passes = []
    original = adapters.status.stale_jobs

    def counting(*args):
        passes.append(1)
        if len(passes) == 3:
            stop.set()
        return original(*args)

    adapters.status.stale_jobs = counting
    assert run_reconciler(adapters, loop=True, interval=0.01, stop=stop) == 3
    assert [m.job_id for m in adapters.queue.messages] == ["job-1", "job-1"]


def test_a_single_pass_reports_a_store_failure_and_a_loop_rides_it_out():
    adapters = stuck_queued(Settings(queued_timeout=10))
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("store unreachable")
        stop.set()
        return []

    adapters.status.stale_jobs = failing
    stop = threading.Event()
    with pytest.raises(ConnectionError):
        run_reconciler(adapters)
    calls.clear()
    assert run_reconciler(adapters, loop=True, interval=0.01, stop=stop) == 2
