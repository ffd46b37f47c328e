"""deploy/kubernetes is valid and coherent, checked without a cluster.

The kustomization is rendered here, as kustomize does for what it uses (its `resources`, its
`configMapGenerator`, `namespace` and `labels`), and — where kubectl is installed — by
`kubectl kustomize` too, whose objects must be the same. Core kinds are validated with
kubernetes-validate (Kubernetes' OpenAPI schemas, strict: an unknown field is an error), KEDA's
ScaledObject and TriggerAuthentication against the openAPIV3Schema of KEDA's CRDs
(tests/fixtures/keda/), made strict the same way. Then what no schema sees: probes on the HTTP
port, the grace period against `shutdown_timeout`, the autoscaler against the input's partitions
and the consumer group, every Secret key the manifests and endpoints.yml need, and the
ConfigMap's files passing `coexistence-router validate` with the Deployment's arguments.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
KEDA_CRDS = ROOT / "tests" / "fixtures" / "keda"
SECRET_EXAMPLE = KUSTOMIZE_DIR / "secret.example.yaml"
# The oldest and the newest Kubernetes release kubernetes-validate has schemas for.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CLUSTER_SCOPED = {"Namespace"}
_HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")  # kustomize's generated-name suffix
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KUSTOMIZE_DIR / "kustomization.yaml").read_text())
    return loaded


def render() -> list[dict[str, Any]]:
    """The objects `kubectl apply -k deploy/kubernetes` creates (generated names unhashed)."""
    spec = kustomization()
    objects: list[dict[str, Any]] = []
    for resource in spec["resources"]:
        objects += [o for o in yaml.safe_load_all((KUSTOMIZE_DIR / resource).read_text()) if o]
    for generator in spec.get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, path = entry.rpartition("=")
            data[key or Path(path).name] = (KUSTOMIZE_DIR / path).read_text()
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    labels = {k: v for group in spec.get("labels", []) for k, v in group["pairs"].items()}
    for obj in objects:
        metadata = obj.setdefault("metadata", {})
        if obj["kind"] not in CLUSTER_SCOPED and "namespace" in spec:
            metadata["namespace"] = spec["namespace"]
        metadata["labels"] = {**metadata.get("labels", {}), **labels}
    return objects


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def endpoints(objects: list[dict[str, Any]]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(one(objects, "ConfigMap")["data"]["endpoints.yml"])
    return loaded


def test_the_kustomization_holds_what_a_deployment_needs(objects: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "Namespace",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "ScaledObject",
            "TriggerAuthentication",
            "ConfigMap",
        ]
    )
    assert set(one(objects, "ConfigMap")["data"]) == {
        "config.yml",
        "endpoints.yml",
        "flows.yml",
        "domain.yml",
    }


def test_kubectl_kustomize_renders_the_same_objects(objects: list[dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the rendering above is what is checked")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE_DIR)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    built = [o for o in yaml.safe_load_all(result.stdout) if o]
    config = one(built, "ConfigMap")["metadata"]["name"]
    assert _HASH_SUFFIX.search(config)  # a changed file gets a new name: the pods roll
    volumes = one(built, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": config} in [v.get("configMap") for v in volumes]

    def unhashed(obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        if obj["kind"] == "ConfigMap":
            obj["metadata"]["name"] = _HASH_SUFFIX.sub("", obj["metadata"]["name"])
        if obj["kind"] == "Deployment":
            for volume in obj["spec"]["template"]["spec"]["volumes"]:
                if "configMap" in volume:
                    volume["configMap"]["name"] = _HASH_SUFFIX.sub("", volume["configMap"]["name"])
        return obj

    def key(obj: dict[str, Any]) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    assert sorted(map(unhashed, built), key=key) == sorted(objects, key=key)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_kinds_are_valid_kubernetes(objects: list[dict[str, Any]], version: str) -> None:
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(obj, version, strict=True)
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    kubernetes_validate.validate(secret, version, strict=True)


def test_strict_validation_refuses_an_unknown_field(objects: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused, where the CRD does not preserve them (what
    kubectl's server-side field validation does; the CRD alone would prune them silently)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    for path in KEDA_CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            [version] = [v for v in crd["spec"]["versions"] if v["storage"]]
            schema = strict(version["schema"]["openAPIV3Schema"])
            return jsonschema.Draft7Validator(schema)
    raise AssertionError(f"no CRD for {kind} in {KEDA_CRDS}")


@pytest.mark.parametrize("kind", ["ScaledObject", "TriggerAuthentication"])
def test_keda_objects_match_keda_crds(objects: list[dict[str, Any]], kind: str) -> None:
    obj = one(objects, kind)
    assert obj["apiVersion"] == "keda.sh/v1alpha1"
    problems = [f"{list(e.path)}: {e.message}" for e in crd_validator(kind).iter_errors(obj)]
    assert problems == []


def test_the_crd_check_refuses_a_broken_scaled_object(objects: list[dict[str, Any]]) -> None:
    validator = crd_validator("ScaledObject")
    misspelt = copy.deepcopy(one(objects, "ScaledObject"))
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    assert not validator.is_valid(misspelt)
    not_a_string = copy.deepcopy(one(objects, "ScaledObject"))
    not_a_string["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 500  # map of strings
    assert not validator.is_valid(not_a_string)


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [worker] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(worker)


def test_probes_and_the_service_use_the_http_port(objects: list[dict[str, Any]]) -> None:
    worker = container(objects)
    env = {e["name"]: e.get("value") for e in worker["env"]}
    [port] = worker["ports"]
    assert (
        port["name"] == "http" and str(port["containerPort"]) == env["COEXISTENCE_ROUTER_HTTP_PORT"]
    )
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    [service_port] = one(objects, "Service")["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    assert env["COEXISTENCE_ROUTER_LOG_FORMAT"] == "json"


def test_selectors_pick_the_worker_pods(objects: list[dict[str, Any]]) -> None:
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one(objects, "Service")["spec"]["selector"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_the_grace_period_covers_the_shutdown(
    objects: list[dict[str, Any]], endpoints: dict[str, Any]
) -> None:
    # SIGTERM: in-flight work gets shutdown_timeout, then committing, leaving the group and
    # closing get one more (worker/runtime/worker.py); a few seconds on top.
    shutdown = float(endpoints["kafka"]["shutdown_timeout"])
    grace = one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert 2 * shutdown + 5 <= grace <= 2 * shutdown + 30


def test_the_autoscaler_reads_the_lag_of_the_workers_group(
    objects: list[dict[str, Any]], endpoints: dict[str, Any]
) -> None:
    kafka = endpoints["kafka"]
    deployment = one(objects, "Deployment")
    scaled = one(objects, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    # More members than input partitions would sit idle.
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= kafka["partitions"]
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    servers = kafka["url"] if isinstance(kafka["url"], str) else ",".join(kafka["url"])
    assert metadata["bootstrapServers"] == servers
    assert metadata["consumerGroup"] == kafka["group_id"]
    assert metadata["topic"] == kafka["topics"]["input"]
    assert int(metadata["lagThreshold"]) > 0
    assert metadata["offsetResetPolicy"] == "earliest"  # as a new group of workers starts
    # The scaler connects as the worker does.
    assert metadata["sasl"] == kafka["sasl_mechanism"].lower().replace("-", "_").replace(
        "_sha_", "_sha"
    )
    assert metadata["tls"] == (
        "enable" if kafka["security_protocol"].endswith("SSL") else "disable"
    )
    assert (
        trigger["authenticationRef"]["name"]
        == one(objects, "TriggerAuthentication")["metadata"]["name"]
    )


def variables(node: Any) -> set[str]:
    """The ${VAR}s of a loaded YAML document's values."""
    if isinstance(node, str):
        return set(_VARIABLE.findall(node))
    items = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return set().union(*(variables(item) for item in items))


def secret_example() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SECRET_EXAMPLE.read_text())
    return loaded


def test_every_secret_reference_has_its_key(
    objects: list[dict[str, Any]], endpoints: dict[str, Any]
) -> None:
    secret = secret_example()
    name, keys = secret["metadata"]["name"], set(secret["stringData"])
    assert secret["metadata"]["namespace"] == kustomization()["namespace"]
    assert container(objects)["envFrom"] == [{"secretRef": {"name": name}}]
    for reference in one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]:
        assert reference["name"] == name and reference["key"] in keys, reference
    needed = variables(endpoints)
    assert needed and needed <= keys, sorted(needed - keys)
    # No secret in the ConfigMap: endpoints.yml names the Kafka credentials as variables.
    assert endpoints["kafka"]["sasl_password"] == "${KAFKA_SASL_PASSWORD}"


def test_the_configmap_files_pass_validate_with_the_deployment_arguments(
    objects: list[dict[str, Any]],
    tmp_path: Path,
    validate: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    worker = container(objects)
    [mount] = [m for m in worker["volumeMounts"] if m["name"] == "config"]
    for key, text in one(objects, "ConfigMap")["data"].items():
        (tmp_path / key).write_text(text)
    args: list[str] = worker["args"]
    assert args[0] == "run"
    local = [a.replace(mount["mountPath"], str(tmp_path)) for a in args[1:]]
    files = [Path(a) for a in local if a.startswith(str(tmp_path))]
    assert {f.name for f in files} == set(one(objects, "ConfigMap")["data"])  # all are used
    assert all(f.is_file() for f in files)
    env = {**secret_example()["stringData"], **{e["name"]: e["value"] for e in worker["env"]}}
    result = validate(local, env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("copy_name", "example"),
    [
        ("config.yml", "llm/config.yml"),
        ("flows.yml", "flows/flows.yml"),
        ("domain.yml", "domain.yml"),
    ],
)
def test_the_configmap_files_are_the_examples_they_copy(copy_name: str, example: str) -> None:
    # kustomize loads no file outside its directory, so the example assistant is copied there;
    # the copies differ from the originals only by their first comment line.
    copied = (ROOT / "deploy" / "kubernetes" / "config" / copy_name).read_text().splitlines()
    original = (ROOT / "worker" / "examples" / example).read_text().splitlines()
    assert copied[0].startswith("#")
    assert copied[1:] == original
