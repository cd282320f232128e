"""`dcas setup` and `dcas reconcile` against the Pub/Sub, Firestore and GCS emulators: create, check, fix drift, dry run."""
from __future__ import annotations

import datetime
import io
import os
import signal
import threading
import time
import uuid

import pytest

from adapters.jobs import JobStatus
from adapters.messages import decode_job_message
from adapters.provisioning import ProvisioningError
from services import cli, jobs, setup
from services.bootstrap import bootstrap
from services.config import Settings


@pytest.fixture
def names(pubsub_emulator, firestore_emulator, gcs_emulator) -> dict[str, str]:
    """Fresh resource names for one test, as the variables `dcas` reads."""
    suffix = uuid.uuid4().hex[:8]
    return {**os.environ, "DCAS_JOBS_TOPIC": f"jobs-{suffix}", "DCAS_JOBS_SUBSCRIPTION": f"jobs-{suffix}-pipeline",
            "DCAS_DEAD_LETTER_TOPIC": f"dead-{suffix}", "DCAS_DEAD_LETTER_SUBSCRIPTION": f"dead-{suffix}",
            "DCAS_STATUS_COLLECTION": f"jobs-{suffix}", "DCAS_BUCKET": f"dcas-setup-{suffix}"}


def run(argv: list[str], env: dict[str, str], monkeypatch) -> tuple[int, list[str], str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stdout, stderr = io.StringIO(), io.StringIO()
    status = cli.main(argv, stdout=stdout, stderr=stderr)
    return status, stdout.getvalue().splitlines(), stderr.getvalue()


def actions(lines: list[str]) -> dict[str, str]:
    """resource name -> what setup said it did, from its one line per resource."""
    found = {}
    for line in lines[:-1]:
        action = "would create" if line.startswith("would create") else (
            "would update" if line.startswith("would update") else line.split()[0])
        name = line[len(action):].split()[1]
        found[name] = action
    return found


def subscriber():
    from google.cloud import pubsub_v1
    return pubsub_v1.SubscriberClient()


def test_setup_creates_everything_then_finds_it_all_ok_and_says_what_it_skipped_on_the_emulators(names, monkeypatch):
    settings = Settings.from_env(names)
    status, first, stderr = run(["setup"], names, monkeypatch)
    assert status == 0 and stderr == ""
    done = actions(first)
    for name in (settings.jobs_topic, settings.dead_letter_topic, settings.jobs_subscription,
                 settings.dead_letter_subscription, f"gs://{settings.bucket}"):
        assert done[name] == "created", first
    skipped = [line for line in first if line.startswith("skipped")]
    assert any("firestore-indexes" in line and "skipped on the emulator" in line for line in skipped)
    assert any("service-account" in line and "skipped on the emulator" in line for line in skipped)
    status, second, _ = run(["setup"], names, monkeypatch)
    assert status == 0
    assert set(actions(second).values()) == {"ok", "skipped"}, second
    assert second[-1].startswith(f"{len(second) - 1} resources: ")
    sub = subscriber().get_subscription(subscription=settings.jobs_subscription)
    assert sub.dead_letter_policy.dead_letter_topic == settings.dead_letter_topic
    assert sub.ack_deadline_seconds == setup.SetupOptions().ack_deadline


def test_a_setting_changed_by_hand_is_reported_and_put_back_and_the_next_run_finds_it_ok(names, monkeypatch):
    settings = Settings.from_env(names)
    assert run(["setup", "--no-iam"], names, monkeypatch)[0] == 0
    client = subscriber()
    client.update_subscription(request={
        "subscription": {"name": settings.jobs_subscription, "ack_deadline_seconds": 30, "dead_letter_policy": None},
        "update_mask": {"paths": ["ack_deadline_seconds", "dead_letter_policy"]}})
    status, lines, _ = run(["setup", "--no-iam", "--dry-run"], names, monkeypatch)
    [line] = [line for line in lines if settings.jobs_subscription in line]
    assert line.startswith("would update") and "ack_deadline_seconds: 30 -> 60" in line
    assert "dead_letter_policy: None -> " in line
    assert client.get_subscription(subscription=settings.jobs_subscription).ack_deadline_seconds == 30
    status, lines, _ = run(["setup", "--no-iam"], names, monkeypatch)
    assert status == 0
    assert actions(lines)[settings.jobs_subscription] == "updated"
    fixed = client.get_subscription(subscription=settings.jobs_subscription)
    assert fixed.ack_deadline_seconds == 60 and fixed.dead_letter_policy.dead_letter_topic == settings.dead_letter_topic
    assert actions(run(["setup", "--no-iam"], names, monkeypatch)[1])[settings.jobs_subscription] == "ok"


def test_a_dry_run_on_a_fresh_project_says_what_it_would_create_and_creates_nothing(names, monkeypatch):
    from google.api_core import exceptions
    from google.cloud import pubsub_v1, storage
    settings = Settings.from_env(names)
    status, lines, _ = run(["setup", "--dry-run"], names, monkeypatch)
    assert status == 0 and lines[-1].endswith("(dry run: nothing changed)")
    done = actions(lines)
    for name in (settings.jobs_topic, settings.jobs_subscription, f"gs://{settings.bucket}"):
        assert done[name] == "would create"
    with pytest.raises(exceptions.NotFound):
        pubsub_v1.PublisherClient().get_topic(topic=settings.jobs_topic)
    assert storage.Client(project=settings.project).lookup_bucket(settings.bucket) is None


def test_a_subscription_on_another_topic_is_refused_in_one_line_and_not_replaced(names, monkeypatch):
    from google.cloud import pubsub_v1
    settings = Settings.from_env(names)
    other = f"projects/{settings.project}/topics/other-{uuid.uuid4().hex[:8]}"
    pubsub_v1.PublisherClient().create_topic(name=other)
    subscriber().create_subscription(name=settings.jobs_subscription, topic=other)
    status, _, stderr = run(["setup", "--no-iam"], names, monkeypatch)
    assert status == 1
    assert stderr.startswith("dcas: error: subscription ") and "cannot change topics" in stderr
    assert len(stderr.splitlines()) == 1
    assert subscriber().get_subscription(subscription=settings.jobs_subscription).topic == other
    with pytest.raises(ProvisioningError):
        setup.apply(setup.plan(settings, iam=False))


@pytest.mark.parametrize("argv, complaint", [(["setup", "--temp-days", "0"], "days must be 1 or more"),
                                             (["reconcile", "--interval", "5"], "--interval goes with --loop"),
                                             (["reconcile", "--loop", "--interval", "-1"], "more than 0 seconds")])
def test_bad_arguments_are_one_error_line_and_exit_two(argv, complaint, names, monkeypatch):
    status, lines, stderr = run(argv, names, monkeypatch)
    assert status == 2 and lines == []
    assert stderr.startswith("dcas: error: ") and complaint in stderr and len(stderr.splitlines()) == 1


def stuck_queued(settings: Settings):
    """A job QUEUED a minute ago whose message was lost: the status document is all there is."""
    adapters = bootstrap(settings)
    request = jobs.new_request("gs://b/in", "gs://b/out.dcz", owner="ann")
    try:
        old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)).isoformat(
            timespec="microseconds")
        adapters.status.create(JobStatus.from_dict({**JobStatus.queued(request).to_dict(), "updated": old}))
    finally:
        adapters.close()
    return request


def test_dcas_reconcile_publishes_a_job_stuck_queued_again(names, monkeypatch):
    env = {**names, "DCAS_QUEUED_TIMEOUT": "5"}
    assert run(["setup", "--no-iam"], env, monkeypatch)[0] == 0
    settings = Settings.from_env(env)
    request = stuck_queued(settings)
    status, lines, stderr = run(["reconcile"], env, monkeypatch)
    assert status == 0 and lines == [f"{request.job_id}: republished (attempt 1)"]
    assert "1 job(s) acted on in 1 pass" in stderr
    client = subscriber()
    response = client.pull(subscription=settings.jobs_subscription, max_messages=5, timeout=10)
    assert [decode_job_message(m.message.data) for m in response.received_messages] == [request]


def test_sigterm_ends_a_reconcile_loop_cleanly_after_it_published_a_stuck_job_once(names, monkeypatch):
    env = {**names, "DCAS_QUEUED_TIMEOUT": "5"}
    assert run(["setup", "--no-iam"], env, monkeypatch)[0] == 0
    request = stuck_queued(Settings.from_env(env))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stdout, stderr = io.StringIO(), io.StringIO()

    def terminate_once_it_acted() -> None:
        deadline = time.monotonic() + 60
        while request.job_id not in stdout.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few more passes, which must not publish it again
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=terminate_once_it_acted, daemon=True)
    killer.start()
    try:
        status = cli.main(["reconcile", "--loop", "--interval", "0.1"], stdout=stdout, stderr=stderr)
    finally:
        killer.join()
        signal.signal(signal.SIGTERM, previous)  # main() installs its own; pytest's goes back
    assert status == 0
    assert stdout.getvalue().splitlines() == [f"{request.job_id}: republished (attempt 1)"]
    assert stderr.getvalue().splitlines() == ["dcas: reconcile: 1 job(s) acted on"]


def test_a_jobs_topic_whose_schema_was_unbound_by_hand_is_bound_again(names, monkeypatch):
    from google.cloud import pubsub_v1
    settings = Settings.from_env(names)
    assert run(["setup", "--no-iam"], names, monkeypatch)[0] == 0
    publisher = pubsub_v1.PublisherClient()
    publisher.update_topic(request={"topic": {"name": settings.jobs_topic}, "update_mask": {"paths": ["schema_settings"]}})
    assert publisher.get_topic(topic=settings.jobs_topic).schema_settings.schema == ""
    status, lines, _ = run(["setup", "--no-iam"], names, monkeypatch)
    [line] = [line for line in lines if line.split()[2] == settings.jobs_topic]
    assert line.startswith("updated") and "schema: None -> projects/" in line
    bound = publisher.get_topic(topic=settings.jobs_topic).schema_settings
    assert bound.schema.endswith("/schemas/dcas-job-v1") and bound.encoding.name == "JSON"
