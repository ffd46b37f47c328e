"""compose/docker-compose.yml is valid and coherent, checked without a Docker engine.

Always: Compose-style interpolation, then the compose-spec JSON Schema (vendored by the
`check-jsonschema` package) plus the cross-references Compose itself resolves (depends_on targets,
healthchecks for `service_healthy`, build context and Dockerfile, bind-mount sources). Also, where
installed, Debian's `docker-compose config` (which needs no engine for that command).

Prometheus' configuration is checked by `promtool check config` (Debian's `prometheus` package,
which .ci/run installs) and the dashboard's expressions by `promtool check rules`; the dashboard
may chart only the metrics SPEC §8 names.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.metric_names import SPEC_COUNTERS_AND_GAUGES, SPEC_HISTOGRAMS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
EXAMPLES = ("llm", "intent")

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class Interpolator:
    """Compose's `${VAR}` rules for values; remembers variables that were needed but unset."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ
        self.unset: set[str] = set()

    def text(self, value: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group("escaped"):
                return "$"
            if match.group("invalid") is not None:
                raise ValueError(f"invalid interpolation in {value!r}")
            name = match.group("braced") or match.group("named")
            op, arg = match.group("op"), match.group("arg") or ""
            current = self.environ.get(name)
            if op in (":-", "-"):
                missing = current is None or (op == ":-" and current == "")
                return arg if missing else str(current)
            if op in (":+", "+"):
                present = current is not None and (op == "+" or current != "")
                return arg if present else ""
            if current is None or (op == ":?" and current == ""):
                self.unset.add(name)  # `${X}` and `${X:?msg}` both need X from the environment
                return ""
            return current

        return _INTERPOLATION.sub(substitute, value)

    def walk(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, list):
            return [self.walk(item) for item in node]
        if isinstance(node, dict):
            return {key: self.walk(value) for key, value in node.items()}
        return node


def load_compose(environ: dict[str, str] | None = None) -> tuple[dict[str, Any], set[str]]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    interpolator = Interpolator(environ or {})
    return interpolator.walk(raw), interpolator.unset


def schema_problems(path: Path) -> str | None:
    """The compose-spec schema check's report, or None when the file is valid."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return None if result.returncode == 0 else result.stdout + result.stderr


def reference_problems(compose: dict[str, Any], base: Path) -> list[str]:
    """What `docker-compose config` resolves beyond the schema."""
    problems: list[str] = []
    services: dict[str, Any] = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for target, options in items:
            if target not in services:
                problems.append(f"{name} depends on undefined service {target}")
            elif options.get("condition") == "service_healthy" and (
                "healthcheck" not in services[target]
            ):
                problems.append(f"{name} waits for {target} to be healthy: it has no healthcheck")
        build = service.get("build")
        if isinstance(build, dict):
            context = (base / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} is missing")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} is missing")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source and source.startswith((".", "/")):
                if not (base / source).resolve().exists():
                    problems.append(f"{name}: bind-mount source {source} does not exist")
            elif source and source not in (compose.get("volumes") or {}):
                problems.append(f"{name}: volume {source} is not declared")
        deploy = service.get("deploy", {})
        if "replicas" in deploy and not str(deploy["replicas"]).isdigit():
            problems.append(f"{name}: deploy.replicas {deploy['replicas']!r} is not an integer")
    return problems


def docker_compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def docker_compose_config(path: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = docker_compose_command()
    assert command is not None
    # Only PATH: variables of the caller's shell must not hide an unset variable in the file.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **environ}
    return subprocess.run(
        # The project directory is compose/ wherever the file is, so relative paths resolve as
        # they do for the real file.
        [*command, "-f", str(path), "--project-directory", str(COMPOSE_DIR), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_compose_file_is_valid(tmp_path: Path) -> None:
    for example in EXAMPLES:
        environ = {"EXAMPLE": example}
        compose, unset = load_compose(environ)
        assert unset == set(), f"variables without a default: {sorted(unset)}"
        interpolated = tmp_path / f"docker-compose.{example}.yml"
        interpolated.write_text(yaml.safe_dump(compose, sort_keys=False))
        assert schema_problems(interpolated) is None, schema_problems(interpolated)
        assert reference_problems(compose, COMPOSE_DIR) == []
        if docker_compose_command() is not None:
            result = docker_compose_config(COMPOSE_FILE, environ)
            assert result.returncode == 0, result.stderr
            assert "is not set" not in result.stderr, result.stderr


def broken_variants() -> list[tuple[str, dict[str, Any]]]:
    good, _ = load_compose()
    variants = []
    unknown_key = yaml.safe_load(yaml.safe_dump(good))
    unknown_key["services"]["worker"]["replica"] = 3
    variants.append(("unknown key", unknown_key))
    undefined_dependency = yaml.safe_load(yaml.safe_dump(good))
    undefined_dependency["services"]["worker"]["depends_on"]["zookeeper"] = {
        "condition": "service_started"
    }
    variants.append(("undefined dependency", undefined_dependency))
    missing_dockerfile = yaml.safe_load(yaml.safe_dump(good))
    missing_dockerfile["services"]["worker"]["build"]["dockerfile"] = "compose/Nope"
    variants.append(("missing Dockerfile", missing_dockerfile))
    return variants


@pytest.mark.parametrize(("what", "compose"), broken_variants())
def test_the_checks_catch_a_broken_file(what: str, compose: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(compose, sort_keys=False))
    caught = schema_problems(path) is not None or reference_problems(compose, COMPOSE_DIR)
    assert caught, what
    if docker_compose_command() is not None and what != "missing Dockerfile":
        # docker-compose config does not open the Dockerfile; the other two it rejects.
        assert docker_compose_config(path, {}).returncode != 0, what


def test_services() -> None:
    compose, _ = load_compose()
    services = compose["services"]
    assert set(services) == {"kafka", "redis", "worker", "fake-llm", "prometheus", "grafana"}

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    kafka_env = kafka["environment"]
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert "INTERNAL://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the worker creates topics

    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 3
    assert worker["build"] == {"context": "..", "dockerfile": "compose/Dockerfile"}
    assert worker["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert worker["command"] == dockerfile_cmd()
    assert worker["command"][:2] == ["coexistence-router", "run"]
    assert set(worker["depends_on"]) == {"kafka", "redis", "fake-llm"}
    assert "container_name" not in worker  # replicas cannot share a name
    assert "ports" not in worker  # nor a published port

    fake = services["fake-llm"]
    assert fake["command"][:3] == ["python", "-m", "worker.fake_llm"]
    port = fake["command"][fake["command"].index("--port") + 1]
    assert port == "8000"
    assert worker["environment"]["FAKE_LLM_BASE"] == f"http://fake-llm:{port}/v1"

    for name, service in services.items():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), f"{name} publishes beyond loopback"


def dockerfile_cmd() -> list[str]:
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    [cmd] = re.findall(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    parsed: list[str] = yaml.safe_load(cmd)
    return parsed


def test_dockerfile() -> None:
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, flags=re.MULTILINE)
    assert "pip install ." in text
    assert dockerfile_cmd() == [
        "coexistence-router",
        "run",
        "--config",
        "/app/config.yml",
        "--endpoints",
        "/app/endpoints.yml",
        "--flows",
        "/app/flows",
        "--domain",
        "/app/domain.yml",
    ]
    kept = [
        line[1:].rstrip("/")
        for line in (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for needed in ("pyproject.toml", "worker", "contracts"):
        assert needed in kept, f"{needed} is not in the image's build context"


@pytest.mark.parametrize("example", EXAMPLES)
def test_worker_service_config_validates(
    example: str, validate: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """The mounted files pass `coexistence-router validate` with exactly the compose environment.

    The worker refuses to start on an unset `${VAR}`, so compose must provide every one.
    """
    compose, _ = load_compose({"EXAMPLE": example})
    worker = compose["services"]["worker"]
    mounted = {}
    for volume in worker["volumes"]:
        source, target = volume.split(":")[:2]
        mounted[target] = (COMPOSE_DIR / source).resolve()
    assert mounted["/app/config.yml"].is_file()
    assert mounted["/app/endpoints.yml"].is_file()
    assert mounted["/app/flows"].is_dir()
    assert mounted["/app/domain.yml"].is_file()
    command = worker["command"]
    assert command[1] == "run"
    args = [mounted.get(arg, arg) for arg in command[2:]]
    result = validate(map(str, args), worker["environment"])
    assert result.returncode == 0, result.stderr


async def test_fake_llm_service_command_runs() -> None:
    """The compose command of the fake LLM, on loopback and a free port, serves its healthcheck."""
    compose, _ = load_compose()
    fake = compose["services"]["fake-llm"]
    args = list(fake["command"])
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = "0"
    assert args[0] == "python"
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args[1:], stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        port = int(line.rsplit(":", 1)[1])
        health_url = re.search(r"'(http://[^']+)'", fake["healthcheck"]["test"][-1])
        assert health_url is not None
        url = health_url.group(1).replace(":8000", f":{port}")
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.status == 200
            body = {"model": "router", "messages": [{"role": "user", "content": "hi"}]}
            async with http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json=body
            ) as response:
                assert (await response.json())["choices"][0]["message"]["content"] == "A"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus" / "prometheus.yml"
GRAFANA_DIR = COMPOSE_DIR / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "coexistence-router.json"
# SPEC §8: the metrics the worker serves on /metrics, and their labels.
# Series names a histogram is queried by, and the label every bucket carries.
SPEC_SERIES = SPEC_COUNTERS_AND_GAUGES | {
    f"{name}{suffix}": labels | ({"le"} if suffix == "_bucket" else set())
    for name, labels in SPEC_HISTOGRAMS.items()
    for suffix in ("_bucket", "_sum", "_count")
}
# What else a PromQL identifier in the dashboard may be: functions, aggregations, keywords, and
# the labels Prometheus adds to every scraped series.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
    "by", "without", "on", "ignoring", "and", "or", "unless", "instance", "job",
}  # fmt: skip
_IDENTIFIER = re.compile(r"(?<![\w:$])[a-zA-Z_:][a-zA-Z0-9_:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool is Debian's `prometheus` package (bash .ci/run installs it)"
    return path


def worker_service() -> dict[str, Any]:
    compose, _ = load_compose()
    worker: dict[str, Any] = compose["services"]["worker"]
    return worker


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = (COMPOSE_DIR / source).resolve()
    return found


def test_prometheus_scrapes_every_worker_replica_on_its_http_port() -> None:
    compose, _ = load_compose()
    prometheus = compose["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")  # the official image
    assert mounts(prometheus)["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "coexistence-router"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # Service discovery of the scaled replicas: compose's DNS answers the service name with
    # every container's address.
    [discovery] = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and "worker" in compose["services"]
    assert discovery["type"] == "A"
    assert str(discovery["port"]) == worker_service()["environment"]["COEXISTENCE_ROUTER_HTTP_PORT"]


def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_refuses_a_broken_prometheus_config(tmp_path: Path) -> None:
    broken = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    broken["scrape_configs"][0]["dns_sd_configs"][0]["type"] = "AAAAA"
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [promtool(), "check", "config", "--syntax-only", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    compose, _ = load_compose()
    grafana = compose["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")  # the official image
    mounted = mounts(grafana)
    assert mounted["/etc/grafana/provisioning"] == (GRAFANA_DIR / "provisioning")
    [source] = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    [provider] = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "coexistence-router.yml").read_text()
    )["providers"]
    assert mounted[provider["options"]["path"]] == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (
        Path(home).parent == Path(provider["options"]["path"]) and Path(home).name == DASHBOARD.name
    )
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def dashboard_expressions() -> dict[str, list[str]]:
    """Panel title -> its PromQL expressions, Grafana's $__rate_interval as Prometheus reads it."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        panel["title"]: [t["expr"].replace("$__rate_interval", "1m") for t in panel["targets"]]
        for panel in dashboard["panels"]
    }


def expression_words(expression: str) -> tuple[set[str], set[str]]:
    """(metric names, other identifiers) of a PromQL expression; label values dropped."""
    words = set(_IDENTIFIER.findall(_STRING.sub('""', expression)))
    metrics = {w for w in words if w.startswith("coexistence_router_")}
    return metrics, words - metrics


def test_the_dashboard_charts_only_spec_metrics_and_their_labels() -> None:
    charted: set[str] = set()
    for title, expressions in dashboard_expressions().items():
        assert expressions, title
        for expression in expressions:
            metrics, others = expression_words(expression)
            assert metrics, f"{title}: {expression} charts no coexistence_router_ metric"
            assert metrics <= set(SPEC_SERIES), (
                f"{title}: not in SPEC §8: {metrics - set(SPEC_SERIES)}"
            )
            labels = set().union(*(SPEC_SERIES[m] for m in metrics))
            unknown = others - PROMQL_WORDS - labels
            assert not unknown, f"{title}: {sorted(unknown)} are neither PromQL nor SPEC labels"
            charted |= metrics
    # What an operator looks at first (issue 13): decisions, LLM latency and failures, lag,
    # cooldowns.
    for needed in (
        "coexistence_router_decisions_total",
        "coexistence_router_llm_request_duration_seconds_bucket",
        "coexistence_router_llm_requests_total",
        "coexistence_router_consumer_lag",
        "coexistence_router_deployment_cooling_down",
    ):
        assert needed in charted, needed


def test_the_word_check_catches_a_metric_outside_the_spec() -> None:
    metrics, others = expression_words('sum by (pod) (rate(up{job="x"}[1m]))')
    assert metrics == set() and {"up", "pod"} <= others - PROMQL_WORDS


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:panel_{i}_{j}", "expr": expression}
        for i, expressions in enumerate(dashboard_expressions().values())
        for j, expression in enumerate(expressions)
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
