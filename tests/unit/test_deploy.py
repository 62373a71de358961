"""deploy/: the compose file, the Kubernetes manifests and the generated routing ConfigMap hold
what docs/DEPLOY.md promises (the compose file cannot be pulled and run here, so its
invariants are checked as data; the manifests go through kubernetes-validate --strict)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.unit._exposition import promtool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def k8s(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name)


def render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_configmap",
                                                  DEPLOY / "render_configmap.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- compose -------------------------------------------------------------------------------

def kafka_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if n.startswith("kafka-")}


def test_compose_runs_three_apache_kafka_brokers_in_kraft_mode() -> None:
    brokers = kafka_services()
    assert len(brokers) == 3
    for service in brokers.values():
        assert service["image"].startswith("apache/kafka:")
        env = service["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert "ZOOKEEPER" not in " ".join(env)
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
    ids = {s["environment"]["KAFKA_NODE_ID"] for s in brokers.values()}
    assert ids == {1, 2, 3}


def test_compose_kafka_replicates_three_times_and_needs_two_in_sync() -> None:
    for service in kafka_services().values():
        env = service["environment"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    router_env = compose()["services"]["worker"]["environment"]
    assert router_env["PEAKROUTE_TOPIC_REPLICATION_FACTOR"] == 3
    assert router_env["PEAKROUTE_KAFKA_BOOTSTRAP_SERVERS"].count(":9092") == 3


def test_compose_redis_keeps_an_append_only_file_synced_every_second_with_a_password() -> None:
    redis = compose()["services"]["redis"]
    conf = (DEPLOY / "compose" / "redis.conf").read_text().splitlines()
    assert "appendonly yes" in conf
    assert "appendfsync everysec" in conf
    assert "maxmemory-policy noeviction" in conf
    assert any(v.endswith(":/usr/local/etc/redis/redis.conf:ro") for v in redis["volumes"])
    assert "requirepass" in " ".join(redis["entrypoint"])
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    worker_env = compose()["services"]["worker"]["environment"]
    assert worker_env["PEAKROUTE_REDIS_PASSWORD"] == redis["environment"]["REDIS_PASSWORD"]


def test_compose_runs_n_workers_after_the_topics_exist() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["command"] == ["worker"]
    assert worker["deploy"]["replicas"] == "${PEAKROUTE_WORKERS:-3}"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["command"] == ["topics"]
    assert worker["stop_grace_period"] == "60s"


def test_compose_prometheus_loads_the_rules_and_scrapes_every_worker() -> None:
    services = compose()["services"]
    volumes = services["prometheus"]["volumes"]
    assert "./prometheus:/etc/prometheus/rules:ro" in volumes
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    sd = prom["scrape_configs"][0]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"]
    assert sd["port"] == compose()["services"]["worker"]["environment"]["PEAKROUTE_WEB_PORT"]


def test_compose_grafana_provisions_the_dashboards_from_deploy_grafana() -> None:
    grafana = compose()["services"]["grafana"]
    assert "./grafana:/var/lib/grafana/dashboards/peakroute:ro" in grafana["volumes"]
    provider = yaml.safe_load(
        (DEPLOY / "compose/grafana/provisioning/dashboards/peakroute.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/peakroute"


def test_compose_demo_services_are_optional_and_run_real_modules() -> None:
    services = compose()["services"]
    for name, role in (("demo-agents", "agents"), ("demo-gateway", "gateway")):
        assert services[name]["profiles"] == ["demo"]
        assert services[name]["entrypoint"] == ["python", "-m", "load_tests.simulate"]
        assert services[name]["command"][0] == role
    assert (ROOT / "load_tests" / "simulate.py").exists()


def test_compose_files_it_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./compose/"):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    run = subprocess.run([promtool(), "check", "config", "--syntax-only",
                          str(DEPLOY / "compose" / "prometheus.yml")],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


# --- Kubernetes ----------------------------------------------------------------------------

def test_kubernetes_validate_strict_passes_on_every_manifest() -> None:
    tool = Path(sys.executable).with_name("kubernetes-validate")
    files = sorted(str(p) for p in K8S.glob("*.yaml"))
    run = subprocess.run([str(tool), "--strict", *files], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ERROR" not in run.stdout


def test_the_worker_deployment_probes_its_web_port_and_terminates_gracefully() -> None:
    deployment = k8s("Deployment", "peakroute-worker")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["worker"]
    assert container["ports"][0]["containerPort"] == 6066
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_deployment_reads_settings_and_credentials_that_exist() -> None:
    pod = k8s("Deployment", "peakroute-worker")["spec"]["template"]["spec"]
    sources = pod["containers"][0]["envFrom"]
    config = k8s("ConfigMap", sources[0]["configMapRef"]["name"])["data"]
    secret = k8s("Secret", sources[1]["secretRef"]["name"])["stringData"]
    assert config["PEAKROUTE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["PEAKROUTE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["PEAKROUTE_REDIS_URL"].startswith("rediss://")
    assert config["PEAKROUTE_WEB_HOST"] == "0.0.0.0"
    assert {"PEAKROUTE_KAFKA_SASL_PASSWORD", "PEAKROUTE_REDIS_PASSWORD"} <= set(secret)
    assert not any("PASSWORD" in key for key in config)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["routing"]["configMap"]["name"] == "peakroute-routing"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert config["PEAKROUTE_ROUTING_POLICY"].startswith(mounts["routing"] + "/")
    assert config["PEAKROUTE_KAFKA_SSL_CAFILE"].startswith(mounts["tls"] + "/")


def test_the_settings_configmap_is_valid_settings() -> None:
    from router.settings import Settings

    env = {**k8s("ConfigMap", "peakroute-settings")["data"],
           **k8s("Secret", "peakroute-credentials")["stringData"]}
    settings = Settings.from_env(env)
    assert settings.topic_replication_factor == 3


def test_the_pdb_and_the_scaler_target_the_worker_deployment() -> None:
    labels = k8s("Deployment", "peakroute-worker")["spec"]["selector"]["matchLabels"]
    assert k8s("PodDisruptionBudget", "peakroute-worker")["spec"]["selector"]["matchLabels"] \
        == labels
    scaled = k8s("ScaledObject", "peakroute-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "peakroute-worker"
    partitions = int(k8s("ConfigMap", "peakroute-settings")["data"]["PEAKROUTE_TOPIC_PARTITIONS"])
    assert scaled["maxReplicaCount"] <= partitions  # more would sit idle
    app_id = k8s("ConfigMap", "peakroute-settings")["data"]["PEAKROUTE_APP_ID"]
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == app_id
        assert trigger["authenticationRef"]["name"] == "peakroute-kafka"


def test_the_routing_configmap_is_what_the_generator_makes_of_the_shipped_files() -> None:
    module = render_module()
    expected = module.render(module.DEFAULT_POLICY, module.resolve_kb_path(""))
    assert (K8S / "configmap-routing.yaml").read_text() == expected, (
        "re-run `python deploy/render_configmap.py`")


def test_the_routing_configmap_generator_refuses_an_invalid_policy(tmp_path: Path) -> None:
    from router.errors import PeakrouteError

    bad = tmp_path / "policy.yaml"
    bad.write_text("queues: 5\n")
    module = render_module()
    with pytest.raises(PeakrouteError):
        module.render(bad, module.resolve_kb_path(""))


def test_monitoring_manifests_carry_the_rule_groups_and_the_dashboards(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n")
    board = tmp_path / "board.json"
    board.write_text('{"title": "night of the sale", "panels": []}\n')
    module = render_module()
    docs = list(yaml.safe_load_all(module.render_monitoring([rules], [board])))
    kinds = {d["kind"]: d for d in docs}
    assert kinds["PrometheusRule"]["spec"]["groups"][0]["rules"][0]["alert"] == "A"
    assert kinds["ConfigMap"]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert kinds["ConfigMap"]["data"]["board.json"] == board.read_text()
    service = k8s("Service", "peakroute-worker")
    monitor = kinds["ServiceMonitor"]["spec"]
    assert monitor["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    assert module.render_monitoring([], []) is None


def test_the_monitoring_manifests_are_current_with_deploy_prometheus_and_grafana() -> None:
    module = render_module()
    expected = module.render_monitoring(*module.monitoring_sources())
    out = K8S / "monitoring.yaml"
    if expected is None:  # no rules or dashboards in this tree yet
        assert not out.exists()
    else:
        assert out.exists(), "run `python deploy/render_configmap.py`"
        assert out.read_text() == expected, "re-run `python deploy/render_configmap.py`"
