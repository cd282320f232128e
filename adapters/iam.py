"""IAM: role bindings merged into policies (pure functions), and GoogleIam, the IamAdmin port on Google Cloud."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterable, Mapping

__all__ = ["Binding", "GoogleIam", "POLICY_VERSION", "add_bindings", "granted", "policy_from_proto", "policy_to_proto"]

# Version 3 is the one that returns (and accepts) conditional bindings: read with anything less, a
# policy that holds conditions comes back without them, and writing it back would drop them.
POLICY_VERSION = 3

_IAM = "https://iam.googleapis.com/v1"
_RESOURCE_MANAGER = "https://cloudresourcemanager.googleapis.com/v1"
_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


@dataclasses.dataclass(frozen=True, order=True)
class Binding:
    """One grant: `member` (`serviceAccount:EMAIL`, `user:EMAIL`, ...) holds `role`, unconditionally."""

    role: str
    member: str


def granted(policy: Mapping[str, Any], binding: Binding) -> bool:
    """Whether `policy` grants `binding` without a condition (a conditional grant gives less: it
    does not count)."""
    return any(entry.get("role") == binding.role and not entry.get("condition")
               and binding.member in entry.get("members", ())
               for entry in policy.get("bindings", ()))


def add_bindings(policy: Mapping[str, Any], wanted: Iterable[Binding]) -> tuple[dict, list[Binding]]:
    """`policy` with every wanted binding granted, and the ones that had to be added (in order).

    Nothing else changes and nothing is removed: other roles and members, conditional bindings,
    audit configs and the etag (setIamPolicy's check that nobody changed the policy since it was
    read) are kept as they were. A member is added to the role's unconditional binding, or to a new
    one. Applying the result again adds nothing. `policy` itself is not modified.
    """
    new = copy.deepcopy(dict(policy))
    added: list[Binding] = []
    for binding in dict.fromkeys(wanted):
        if granted(new, binding):
            continue
        bindings = new.setdefault("bindings", [])
        entry = next((e for e in bindings if e.get("role") == binding.role and not e.get("condition")), None)
        if entry is None:
            entry = {"role": binding.role, "members": []}
            bindings.append(entry)
        entry["members"] = [*entry.get("members", []), binding.member]
        added.append(binding)
    if any(entry.get("condition") for entry in new.get("bindings", ())):
        new["version"] = max(int(new.get("version") or 1), POLICY_VERSION)
    return new, added


def policy_from_proto(policy) -> dict:
    """A google.iam.v1 Policy message (what gRPC clients such as Pub/Sub's return) as the JSON shape."""
    from google.protobuf import json_format
    return json_format.MessageToDict(policy)


def policy_to_proto(policy: Mapping[str, Any]):
    """The JSON shape back into a google.iam.v1 Policy message (the etag is base64 in JSON)."""
    from google.iam.v1 import policy_pb2
    from google.protobuf import json_format
    return json_format.ParseDict(dict(policy), policy_pb2.Policy())


class GoogleIam:
    """IamAdmin on Google Cloud: bucket, topic and subscription policies through the Cloud Storage and
    Pub/Sub clients; service accounts and project policies through the IAM and Resource Manager REST
    APIs (an AuthorizedSession on the application default credentials). Clients are made on first use."""

    def __init__(self, project: str | None = None, session=None) -> None:
        self._project = project
        self._session = session
        self._clients: dict[str, Any] = {}

    # -- service accounts and the project (REST)

    def service_account(self, email: str) -> dict | None:
        from google.api_core import exceptions
        try:
            return self._rest("GET", f"{_IAM}/projects/-/serviceAccounts/{email}")
        except exceptions.NotFound:
            return None

    def create_service_account(self, project: str, account_id: str, display_name: str) -> dict:
        return self._rest("POST", f"{_IAM}/projects/{project}/serviceAccounts",
                          {"accountId": account_id, "serviceAccount": {"displayName": display_name}})

    def project_number(self, project: str) -> str:
        return str(self._rest("GET", f"{_RESOURCE_MANAGER}/projects/{project}")["projectNumber"])

    # -- policies

    def get_policy(self, resource: str) -> dict:
        kind, name = _where(resource)
        if kind == "bucket":
            policy = self._bucket(name).get_iam_policy(requested_policy_version=POLICY_VERSION)
            return policy.to_api_repr()
        if kind in ("topic", "subscription"):
            return policy_from_proto(self._pubsub(kind).get_iam_policy(request={
                "resource": name, "options": {"requested_policy_version": POLICY_VERSION}}))
        if kind == "service-account":
            return self._rest("POST", f"{_IAM}/{name}:getIamPolicy"
                                      f"?options.requestedPolicyVersion={POLICY_VERSION}")
        return self._rest("POST", f"{_RESOURCE_MANAGER}/{name}:getIamPolicy",
                          {"options": {"requestedPolicyVersion": POLICY_VERSION}})

    def set_policy(self, resource: str, policy: dict) -> dict:
        kind, name = _where(resource)
        if kind == "bucket":
            from google.api_core.iam import Policy
            return self._bucket(name).set_iam_policy(Policy.from_api_repr(copy.deepcopy(policy))).to_api_repr()
        if kind in ("topic", "subscription"):
            return policy_from_proto(self._pubsub(kind).set_iam_policy(request={
                "resource": name, "policy": policy_to_proto(policy)}))
        base = _IAM if kind == "service-account" else _RESOURCE_MANAGER
        return self._rest("POST", f"{base}/{name}:setIamPolicy", {"policy": policy})

    def close(self) -> None:
        for name, client in self._clients.items():
            if name == "topic":
                client.stop()
            elif name == "subscription":
                client.close()
        self._clients.clear()
        if self._session is not None:
            self._session.close()

    # -- clients

    def _rest(self, method: str, url: str, body: dict | None = None) -> dict:
        from google.api_core import exceptions

        from adapters.retries import CALL_TIMEOUT
        if self._session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession
            credentials, _ = google.auth.default(scopes=_SCOPES)
            self._session = AuthorizedSession(credentials)
        response = self._session.request(method, url, json=body, timeout=CALL_TIMEOUT)
        if response.status_code >= 400:
            raise exceptions.from_http_response(response)
        return response.json() if response.content else {}

    def _bucket(self, name: str):
        if "storage" not in self._clients:
            from google.cloud import storage
            self._clients["storage"] = storage.Client(project=self._project)
        return self._clients["storage"].bucket(name)

    def _pubsub(self, kind: str):
        if kind not in self._clients:
            from google.cloud import pubsub_v1
            self._clients[kind] = pubsub_v1.PublisherClient() if kind == "topic" else pubsub_v1.SubscriberClient()
        return self._clients[kind]


def _where(resource: str) -> tuple[str, str]:
    """(kind, API name) of a policy's resource: bucket, topic, subscription, service-account or project."""
    if resource.startswith("gs://"):
        return "bucket", resource.removeprefix("gs://")
    parts = resource.split("/")
    if len(parts) == 2 and parts[0] == "projects":
        return "project", resource
    if len(parts) == 4 and parts[0] == "projects":
        kinds = {"topics": "topic", "subscriptions": "subscription", "serviceAccounts": "service-account"}
        if parts[2] in kinds:
            return kinds[parts[2]], resource
    raise ValueError(f"no IAM policy known for {resource!r}: expected projects/P, gs://BUCKET, "
                     "projects/P/topics/T, projects/P/subscriptions/S or projects/P/serviceAccounts/EMAIL")
