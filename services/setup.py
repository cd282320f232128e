"""`dcas setup`: what a project needs (Pub/Sub, bucket, Firestore indexes, IAM), planned from the settings and applied idempotently."""
from __future__ import annotations

import dataclasses
import shlex
from typing import Callable, Iterable, Sequence

from adapters.firestore import COMPOSITE_INDEXES
from adapters.local_files import TEMP_DIR_NAME
from adapters.ports import IamAdmin
from adapters.provisioning import FAILED, IAM_KINDS, Outcome, Resource, apply_resource, iam_command
from adapters.pubsub import (DEFAULT_ACK_DEADLINE, DEFAULT_MAX_DELIVERY_ATTEMPTS, DEFAULT_RETRY_BACKOFF,
                             PubSubResources)
from services.config import Settings

__all__ = ["IDENTITIES", "PUBSUB_KINDS", "SETUP_ROLES", "SetupOptions", "apply", "failed", "firestore_indexes_json",
           "format_outcome", "lifecycle_rules", "plan", "summary"]

PUBSUB_KINDS = ("schema", "topic", "subscription")
# The Kubernetes namespace the services and the reconciler run in (deploy/k8s), for Workload Identity.
K8S_NAMESPACE = "dcas"


@dataclasses.dataclass(frozen=True)
class SetupOptions:
    """What `dcas setup` takes besides the settings' names."""

    temp_days: int = 2             # `.dcas-tmp/` objects older than this are a dead attempt's
    upload_days: int = 7           # a direct upload never completed: its record goes after this
    jobs_retention_days: int | None = None  # everything under the Manager's `jobs/` (None: kept)
    output_prefixes: tuple[str, ...] = ()   # where batch outputs go: their `.dcas-tmp/` is matched too
    location: str | None = None    # of a bucket setup creates (None: GCS's default, US)
    ack_deadline: int = DEFAULT_ACK_DEADLINE
    retry_backoff: tuple[float, float] = DEFAULT_RETRY_BACKOFF
    max_delivery_attempts: int = DEFAULT_MAX_DELIVERY_ATTEMPTS

    def __post_init__(self) -> None:
        for name in ("temp_days", "upload_days", "jobs_retention_days"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be 1 or more days, got {value}")
        if not 5 <= self.max_delivery_attempts <= 100:
            raise ValueError("max delivery attempts must be between 5 and 100 (Pub/Sub's bounds), "
                             f"got {self.max_delivery_attempts}")
        if not 10 <= self.ack_deadline <= 600:
            raise ValueError(f"the ack deadline must be between 10 and 600 s, got {self.ack_deadline}")


def _jobs_prefix() -> str:
    # The Manager's folder for job objects, as services.uploads names it (`jobs/<id>/...`).
    from services.uploads import job_prefix
    return job_prefix("b", "j").removeprefix("gs://b/").removesuffix("j/")


def lifecycle_rules(options: SetupOptions) -> list[dict]:
    """The data bucket's lifecycle rules, in the JSON form of the GCS API (and of
    `gcloud storage buckets update --lifecycle-file`).

    GCS matches object names by prefix and suffix only, so `.dcas-tmp/` is matched where it can
    be: at the bucket's root and under each output prefix given. The Manager's temp folders
    (`jobs/<id>/out/.dcas-tmp/`) sit below a per-job folder no prefix can name; the pipeline
    removes them itself, and `jobs_retention_days` bounds whatever a killed attempt left there.
    """
    from services.uploads import PENDING_DIR
    temp = [f"{TEMP_DIR_NAME}/"] + [f"{p.strip('/')}/{TEMP_DIR_NAME}/" for p in options.output_prefixes]
    jobs = _jobs_prefix()
    rules = [
        {"action": {"type": "Delete"}, "condition": {"age": options.temp_days, "matchesPrefix": temp}},
        # A direct upload whose client never said it was complete: its pending record (a backstop:
        # the reconciler's sweep ends such uploads, objects and session too, after DCAS_UPLOAD_TTL).
        {"action": {"type": "Delete"},
         "condition": {"age": options.upload_days, "matchesPrefix": [PENDING_DIR]}},
        {"action": {"type": "AbortIncompleteMultipartUpload"}, "condition": {"age": 1}},
    ]
    if options.jobs_retention_days is not None:
        rules.append({"action": {"type": "Delete"},
                      "condition": {"age": options.jobs_retention_days, "matchesPrefix": [jobs]}})
    return rules


def firestore_indexes_json(collection: str = "jobs") -> dict:
    """The composite indexes the status store's queries need, in the format of
    `firebase deploy --only firestore:indexes` (deploy/firestore.indexes.json is this, for `jobs`)."""
    return {"indexes": [{"collectionGroup": collection, "queryScope": "COLLECTION",
                         "fields": [{"fieldPath": path, "order": order} for path, order in index]}
                        for index in COMPOSITE_INDEXES],
            "fieldOverrides": []}


# Who runs what (deploy/k8s, docs/operations.md "Identities"), and the least each needs. A scope
# is "project", "bucket", "topic", "subscription" or "dead-letter-topic"; members are service
# account ids, or "pubsub-agent" for the Pub/Sub service agent (dead-letter forwarding).
IDENTITIES: dict[str, dict] = {
    "dcas-http": {"runs": "the Manager and Status services", "k8s": "dcas-http",
                  "roles": [("roles/storage.objectAdmin", "bucket"), ("roles/pubsub.publisher", "topic"),
                            ("roles/datastore.user", "project"), ("roles/cloudtrace.agent", "project")]},
    "dcas-dataflow": {"runs": "Dataflow workers and launcher of both pipelines", "k8s": None,
                      "roles": [("roles/dataflow.worker", "project"), ("roles/storage.objectAdmin", "bucket"),
                                ("roles/pubsub.subscriber", "subscription"), ("roles/pubsub.viewer", "subscription"),
                                ("roles/pubsub.publisher", "dead-letter-topic"), ("roles/datastore.user", "project"),
                                ("roles/cloudtrace.agent", "project")]},
    "dcas-reconciler": {"runs": "the reconciler (dcas reconcile)", "k8s": "dcas-reconciler",
                        # No roles/cloudtrace.agent: the reconciler records no spans.
                        "roles": [("roles/pubsub.publisher", "topic"), ("roles/datastore.user", "project")]},
    "pubsub-agent": {"runs": "Pub/Sub's own service agent: forwards undeliverable messages", "k8s": None,
                     "roles": [("roles/pubsub.publisher", "dead-letter-topic"),
                               ("roles/pubsub.subscriber", "subscription")]},
}

# What the person (or CI identity) running `dcas setup` needs to apply each scope's IAM: named in
# a permission-denied line, and listed in docs/operations.md.
SETUP_ROLES: dict[str, str] = {
    "service-account": "roles/iam.serviceAccountAdmin", "project": "roles/resourcemanager.projectIamAdmin",
    "bucket": "roles/storage.admin", "topic": "roles/pubsub.admin", "dead-letter-topic": "roles/pubsub.admin",
    "subscription": "roles/pubsub.admin", "workload-identity": "roles/iam.serviceAccountAdmin",
}
_PUBSUB_AGENT = "serviceAccount:service-{project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"


def _iam(settings: Settings, emulator: bool) -> list[Resource]:
    project = settings.project
    names = _pubsub_names(settings)
    q = shlex.quote

    def email(account: str) -> str:
        return f"{account}@{project}.iam.gserviceaccount.com"

    def member(account: str) -> str:
        return _PUBSUB_AGENT if account == "pubsub-agent" else f"serviceAccount:{email(account)}"

    def shell_member(account: str) -> str:
        if account == "pubsub-agent":
            return (f'"serviceAccount:service-$(gcloud projects describe {q(project)} --format=\'value(projectNumber)\')'
                    '@gcp-sa-pubsub.iam.gserviceaccount.com"')
        return member(account)

    def command(scope: str, role: str, who: str) -> str:
        tail = f"--member {who} --role {role}"
        if scope == "project":
            return f"gcloud projects add-iam-policy-binding {q(project)} {tail} --condition=None"
        if scope == "bucket":
            return f"gcloud storage buckets add-iam-policy-binding gs://{settings.bucket} {tail}"
        if scope in ("topic", "dead-letter-topic"):
            return f"gcloud pubsub topics add-iam-policy-binding {policy_of[scope]} {tail}"
        return f"gcloud pubsub subscriptions add-iam-policy-binding {names.subscription} {tail}"

    # Where each scope's policy lives (adapters.ports.IamAdmin names), and how a line names it.
    policy_of = {"project": f"projects/{project}", "bucket": f"gs://{settings.bucket}", "topic": names.topic,
                 "dead-letter-topic": names.dead_letter_topic, "subscription": names.subscription}
    resources = []
    for account, identity in IDENTITIES.items():
        if account != "pubsub-agent":
            display = "DCaS: " + identity["runs"]
            resources.append(Resource("service-account", email(account), {
                "emulator": emulator, "project": project, "account_id": account, "display_name": display,
                "admin_role": SETUP_ROLES["service-account"],
                "command": f"gcloud iam service-accounts create {account} --project {q(project)} "
                           f"--display-name {q(display)}"}))
        for role, scope in identity["roles"]:
            resources.append(Resource("iam-binding", f"{role} on {policy_of[scope]} for {account}", {
                "emulator": emulator, "project": project, "resource": policy_of[scope], "role": role,
                "member": member(account), "admin_role": SETUP_ROLES[scope],
                "command": command(scope, role, shell_member(account))}))
        if identity["k8s"]:
            who = f"serviceAccount:{project}.svc.id.goog[{K8S_NAMESPACE}/{identity['k8s']}]"
            resources.append(Resource("iam-binding", f"roles/iam.workloadIdentityUser on {email(account)} for "
                                      f"{K8S_NAMESPACE}/{identity['k8s']}", {
                                          "emulator": emulator, "project": project,
                                          "resource": f"projects/{project}/serviceAccounts/{email(account)}",
                                          "role": "roles/iam.workloadIdentityUser", "member": who,
                                          "admin_role": SETUP_ROLES["workload-identity"],
                                          "command": f"gcloud iam service-accounts add-iam-policy-binding "
                                                     f"{email(account)} --project {q(project)} --member {q(who)} "
                                                     "--role roles/iam.workloadIdentityUser"}))
    return resources


def _pubsub_names(settings: Settings) -> PubSubResources:
    return PubSubResources.named(settings.project, settings.jobs_topic, settings.jobs_subscription,
                                 settings.dead_letter_topic, settings.dead_letter_subscription)


def plan(settings: Settings, options: SetupOptions = SetupOptions(), *, iam: bool = True) -> list[Resource]:
    """Every resource the job service needs in `settings`' project, with its wanted settings,
    in an order that can be applied (a topic before its subscriptions). Pure: reads nothing."""
    on_emulators = bool(settings.pubsub_emulator_host or settings.firestore_emulator_host
                        or settings.storage_emulator_host)
    resources = _pubsub_names(settings).wanted(options.ack_deadline, options.retry_backoff,
                                               options.max_delivery_attempts)
    resources.append(Resource("bucket", f"gs://{settings.bucket}",
                              {"project": settings.project, "lifecycle_rules": lifecycle_rules(options),
                               "emulator": bool(settings.storage_emulator_host), "location": options.location}))
    resources.append(Resource(
        "firestore-indexes",
        f"projects/{settings.project}/databases/(default)/collectionGroups/{settings.status_collection}",
        {"indexes": [list(map(list, index)) for index in COMPOSITE_INDEXES],
         "emulator": bool(settings.firestore_emulator_host)}))
    if iam:
        resources += _iam(settings, on_emulators)
    return resources


def apply(resources: Iterable[Resource], *, dry_run: bool = False,
          on_outcome: Callable[[Outcome], None] | None = None, iam: IamAdmin | None = None,
          print_iam: bool = False) -> list[Outcome]:
    """Applies each resource in order (adapters.provisioning.apply_resource); `on_outcome` hears
    of each as soon as it is done. A resource that cannot be fixed raises ProvisioningError.

    Service accounts and IAM bindings go through `iam` (Google Cloud's when None), or are printed
    as gcloud commands with `print_iam`; one that fails (permission denied, no credentials) is a
    FAILED outcome saying why, and the others are still applied.
    """
    own = None
    if iam is None and not print_iam:
        from adapters.iam import GoogleIam
        iam = own = GoogleIam()
    outcomes = []
    try:
        for resource in resources:
            if resource.kind not in IAM_KINDS:
                outcome = apply_resource(resource, dry_run=dry_run)
            elif print_iam:
                outcome = iam_command(resource)
            else:
                try:
                    outcome = apply_resource(resource, dry_run=dry_run, iam=iam)
                except _iam_errors() as e:
                    outcome = Outcome(resource, FAILED, _why(resource, e))
            if on_outcome is not None:
                on_outcome(outcome)
            outcomes.append(outcome)
    finally:
        if own is not None:
            own.close()
    return outcomes


def _iam_errors() -> tuple[type[Exception], ...]:
    import requests
    from google.api_core import exceptions
    from google.auth import exceptions as auth
    return exceptions.GoogleAPICallError, exceptions.RetryError, auth.GoogleAuthError, requests.RequestException


def _why(resource: Resource, error: Exception) -> str:
    """One line: what the API said, and for a refusal, the role that would have allowed it."""
    from google.api_core import exceptions
    from google.auth import exceptions as auth
    if isinstance(error, auth.DefaultCredentialsError):
        return "no Google credentials: run `gcloud auth application-default login`"
    text = " ".join(str(error).split())
    text = text if len(text) <= 240 else text[:237] + "..."
    if isinstance(error, exceptions.Forbidden):
        return f"{text}; applying it needs {resource.settings['admin_role']} (or --print-iam for the commands)"
    return text


def failed(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The outcomes of resources that could not be applied."""
    return [outcome for outcome in outcomes if outcome.action == FAILED]


def format_outcome(outcome: Outcome) -> str:
    """One line per resource: what happened, the kind, the name, and why when it was not ok."""
    line = f"{outcome.action:<12} {outcome.resource.kind:<17} {outcome.resource.name}"
    return f"{line}  ({outcome.detail})" if outcome.detail else line


def summary(outcomes: Sequence[Outcome]) -> str:
    """The last line: how many resources ended how, e.g. `12 resources: 10 ok, 2 skipped`."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    return f"{len(outcomes)} resources: " + ", ".join(f"{n} {action}" for action, n in counts.items())
