"""The Kubernetes manifests are valid against the API's schemas (offline) and say what the image and docs say."""
from __future__ import annotations

import pathlib
import re

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest and the newest Kubernetes minor we deploy to (GKE's regular and rapid channels).
KUBERNETES_VERSIONS = ["1.33.0", "1.37.0"]
RUNTIME_UID = int(re.search(r"^ARG RUNTIME_UID=(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1))
ROLES = {role for roles in re.findall(r"^    ([a-z|]+)\)", (ROOT / "deploy" / "image" / "dcas-role").read_text(),
                                       re.MULTILINE) for role in roles.split("|")}


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def resources() -> list[dict]:
    return [doc for name in kustomization()["resources"] for doc in yaml.safe_load_all((K8S / name).read_text())
            if doc]


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in resources() if doc["kind"] == kind]


def pod_containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_the_kustomization_lists_every_manifest_in_the_folder_and_only_those():
    listed = set(kustomization()["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas_strictly(version):
    for doc in resources():
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError with the path


def test_the_schema_check_is_live_a_misspelt_field_fails_it():
    (deployment, *_) = of_kind("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_both_services_are_deployed_from_the_one_image_in_their_role():
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    assert set(deployments) == {"dcas-manager", "dcas-status"}
    (image,) = kustomization()["images"]
    for name, deployment in deployments.items():
        main = deployment["spec"]["template"]["spec"]["containers"][0]
        assert main["command"] == ["dcas-role", name.removeprefix("dcas-")]
        assert main["command"][1] in ROLES
        assert {c["image"] for c in pod_containers(deployment)} == {image["name"]}
    assert image["newTag"] != "latest" and image["newName"].endswith("/dcas")


def test_every_pod_runs_as_the_images_non_root_user_with_nothing_it_does_not_need():
    for deployment in of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == RUNTIME_UID
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod_containers(deployment):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]


def test_every_container_has_requests_and_a_memory_limit_and_the_services_have_all_three_probes():
    for deployment in of_kind("Deployment"):
        for container in pod_containers(deployment):
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]
        main = deployment["spec"]["template"]["spec"]["containers"][0]
        port_names = {p["name"] for p in main["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            (action,) = [main[probe][k] for k in ("httpGet", "tcpSocket") if k in main[probe]]
            assert action["port"] in port_names, (deployment["metadata"]["name"], probe)


def test_open_requests_get_their_shutdown_time_within_the_pods_grace_period():
    for deployment in of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert 0 < int(env["DCAS_GRACEFUL_SHUTDOWN"]) < pod["terminationGracePeriodSeconds"]


def test_the_numba_cache_compiled_at_build_is_copied_to_where_the_service_reads_it():
    for deployment in of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        source, target = init["command"][-2:]
        assert source == "/opt/dcas/numba-cache/."
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/opt/dcas/numba-cache"] == {m["mountPath"]: m["name"] for m in init["volumeMounts"]}[
            target.rstrip("/")]


def test_each_deployment_has_a_service_an_autoscaler_on_requests_and_a_disruption_budget():
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert {d["metadata"]["name"] for d in of_kind(kind)} == set(deployments), kind
    for hpa in of_kind("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": hpa["metadata"]["name"]}
        pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        assert pods_metrics == ["dcas_http_requests_per_second"]
        assert hpa["spec"]["minReplicas"] >= 2  # one pod may be replaced while the other serves
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        labels = deployments[service["metadata"]["name"]]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()


def test_every_namespaced_resource_is_in_the_namespace_argo_cd_deploys_to():
    application = yaml.safe_load((ROOT / "deploy" / "argocd" / "application.yaml").read_text())
    namespace = application["spec"]["destination"]["namespace"]
    assert kustomization()["namespace"] == namespace
    for doc in resources():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]


def test_the_argo_cd_application_syncs_this_folder_automatically_and_prunes():
    application = yaml.safe_load((ROOT / "deploy" / "argocd" / "application.yaml").read_text())
    assert (application["apiVersion"], application["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source = application["spec"]["source"]
    assert (ROOT / source["path"] / "kustomization.yaml").is_file()
    assert application["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_the_reconciler_runs_one_pass_of_dcas_reconcile_at_a_time_as_its_own_non_root_account():
    (cron,) = of_kind("CronJob")
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["dcas-role", "dcas", "reconcile"] and "dcas" in ROLES
    assert container["image"] == kustomization()["images"][0]["name"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    # A pass ends before the next is due (the schedule is every N minutes).
    every = int(re.fullmatch(r"\*/(\d+) \* \* \* \*", cron["spec"]["schedule"]).group(1))
    assert job["activeDeadlineSeconds"] < every * 60
    accounts = {sa["metadata"]["name"]: sa for sa in of_kind("ServiceAccount")}
    assert pod["serviceAccountName"] == "dcas-reconciler" in accounts
    assert pod["serviceAccountName"] != "dcas-http"  # not the services' broader account
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == RUNTIME_UID
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "memory" in container["resources"]["limits"]
