"""deploy/kubernetes/ rendered and checked without a cluster.

Rendering is what ``kubectl apply -k`` would send, for the kustomize fields these
kustomizations use (resources, namespace, labels, images); a field the renderer does not know
fails the test instead of being ignored. Every object is then validated against Kubernetes' own
JSON schemas (kubernetes-validate ships them offline), strictly (an unknown field is an error),
for the oldest release the docs promise and the newest the package knows; the one custom
resource (the Prometheus Operator's PodMonitor) against a small table of its required fields.

Then the contract with the daemon, read from the daemon's own code so a drift fails here: the
ConfigMap is a config ``load_config`` accepts and that may listen beyond loopback (tokens set),
the container port and probes are the daemon's, the token and config files are mounted where the
config and the probes read them, the grace period covers the preStop wait plus the drain's
bounds, and every metric the HPA and the Prometheus adapter use is a gauge the daemon exports.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from streamguard import daemon
from streamguard.config import ServerSettings, Settings, load_config
from streamguard.errors import ConfigError
from streamguard.metrics import Metrics
from streamguard.server.access import METRICS_PATH, exposure_problem

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
CONTAINER = ROOT / "deploy" / "container"
#: The oldest Kubernetes release deploy/README.md supports, and the newest with schemas here.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
#: Applied by hand where it applies (a cluster with the Prometheus Operator), not by kustomize.
OPTIONAL = {"monitoring/podmonitor.yaml"}
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "namespace", "labels", "images"}
HEALTHZ = "/healthz"


def load_yaml(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[dict]:
    """The objects ``kubectl apply -k directory`` would send (for the fields used here)."""
    (kustomization,) = load_yaml(directory / "kustomization.yaml")
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    assert not unknown, f"{directory}: the test's renderer does not know {sorted(unknown)}"
    objects = []
    for resource in kustomization["resources"]:
        for obj in load_yaml(directory / resource):
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            if "namespace" in kustomization:
                meta["namespace"] = kustomization["namespace"]
            for entry in kustomization.get("labels", []):
                assert not entry.get("includeSelectors"), "selectors are not rewritten here"
                meta.setdefault("labels", {}).update(entry["pairs"])
            for image in kustomization.get("images", []):
                for container in containers(obj):
                    if container["image"].split(":")[0] == image["name"]:
                        container["image"] = f"{image['newName']}:{image['newTag']}"
            obj["_file"] = f"{directory.relative_to(K8S) / resource}".removeprefix("./")
            objects.append(obj)
    return objects


def containers(obj: dict) -> list[dict]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return pod.get("containers", [])


RENDERED = render(K8S) + render(K8S / "monitoring")
OPTIONAL_OBJECTS = [
    {**obj, "_file": name} for name in sorted(OPTIONAL) for obj in load_yaml(K8S / name)
]


def one(kind: str, name: str, objects=RENDERED) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def plain(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "_file"}


STATEFULSET = one("StatefulSet", "streamguard")
POD = STATEFULSET["spec"]["template"]["spec"]
(DAEMON,) = POD["containers"]
CONFIG_MAP = one("ConfigMap", "streamguard-config")


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    """The ConfigMap's streamguard.toml, read by the daemon's own loader."""
    path = tmp_path_factory.mktemp("cm") / "streamguard.toml"
    path.write_text(CONFIG_MAP["data"]["streamguard.toml"])
    return load_config(path)


def test_every_manifest_is_rendered_or_known_optional():
    files = {str(p.relative_to(K8S)) for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    rendered = {o["_file"] for o in RENDERED}
    assert files == rendered | OPTIONAL, f"not in a kustomization: {files - rendered - OPTIONAL}"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "obj", RENDERED, ids=lambda o: f"{o['_file']}:{o['kind']}/{o['metadata']['name']}"
)
def test_object_matches_the_kubernetes_schema(obj, version):
    kubernetes_validate.validate(plain(obj), version, strict=True)


def test_the_schema_check_can_fail():
    """Strict schemas catch a misspelt field and a missing required one."""
    typo = copy.deepcopy(plain(STATEFULSET))
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbes"] = {}
    missing = copy.deepcopy(plain(STATEFULSET))
    del missing["spec"]["selector"]
    for broken in (typo, missing):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_podmonitor_scrapes_metrics_with_the_alerts_token():
    """The Prometheus Operator's CRD is not in Kubernetes' schemas: its required fields here."""
    (monitor,) = OPTIONAL_OBJECTS
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    assert set(monitor["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector"}
    assert matches(monitor["spec"]["selector"], STATEFULSET["spec"]["template"])
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in DAEMON["ports"]}
    assert endpoint["path"] == METRICS_PATH
    credentials = endpoint["authorization"]["credentials"]
    tokens = volume("tokens")["secret"]
    assert credentials["name"] == tokens["secretName"]
    assert credentials["key"] == "alerts_token" and credentials["key"] in item_keys(tokens)


# -- the daemon's side -----------------------------------------------------------------------


def test_configmap_is_a_daemon_config_that_may_listen_beyond_loopback(settings):
    assert settings.server.host == "0.0.0.0"
    assert exposure_problem(settings) is None  # every surface has its token
    assert settings.auth.allow_unauthenticated is False


def test_the_images_own_config_may_listen_beyond_loopback_too():
    image = load_config(CONTAINER / "streamguard.toml")
    assert image.server.host == "0.0.0.0" and exposure_problem(image) is None
    assert image.auth.allow_unauthenticated is False


def test_container_port_is_the_daemons(settings):
    default = ServerSettings().port
    (port,) = DAEMON["ports"]
    assert port["containerPort"] == settings.server.port == default
    assert port["protocol"] == "TCP"
    assert f"EXPOSE {default}/tcp" in (CONTAINER / "Containerfile").read_text()
    assert load_config(CONTAINER / "streamguard.toml").server.port == default
    for service in (one("Service", "streamguard"), one("Service", "streamguard-pods")):
        (service_port,) = service["spec"]["ports"]
        assert service_port["targetPort"] == port["name"]


def test_probes_use_the_daemons_health_endpoint():
    # /healthz is one of the daemon's built-in paths: the config refuses it for anything else.
    with pytest.raises(ConfigError, match="built-in"):
        load_config(None, {"alerts": {"path": HEALTHZ}})
    port_names = {p["name"] for p in DAEMON["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = DAEMON[probe]["httpGet"]
        assert get["path"] == HEALTHZ and get["port"] in port_names, probe
    assert "HEALTHCHECK" in (CONTAINER / "Containerfile").read_text()


def volume(name: str) -> dict:
    (found,) = [v for v in POD["volumes"] if v["name"] == name]
    return found


def mount(name: str) -> str:
    (found,) = [m for m in DAEMON["volumeMounts"] if m["name"] == name]
    return found["mountPath"]


def item_keys(source: dict) -> set[str]:
    return {item["key"] for item in source["items"]}


def test_tokens_are_mounted_files_where_the_config_reads_them(settings):
    auth = settings.auth
    files = [Path(auth.ingest_token_file), Path(auth.alerts_token_file)]
    assert auth.token is None and auth.ingest_token is None and auth.alerts_token is None
    assert {str(f.parent) for f in files} == {mount("tokens")}
    tokens = volume("tokens")["secret"]
    assert {item["path"] for item in tokens["items"]} == {f.name for f in files}
    assert not [e for e in DAEMON.get("env", []) if "TOKEN" in e["name"]]  # files, not env


def probe_module():
    spec = importlib.util.spec_from_file_location("probe", CONTAINER / "probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_is_mounted_where_the_daemon_and_its_probes_read_it():
    config_path = probe_module().CONFIG
    assert DAEMON["args"] == ["serve", "--config", str(config_path)]
    source = volume("config")["configMap"]
    assert source["name"] == CONFIG_MAP["metadata"]["name"]
    (item,) = source["items"]
    assert Path(mount("config")) / item["path"] == config_path
    assert item["key"] in CONFIG_MAP["data"]
    assert f'"--config", "{config_path}"' in (CONTAINER / "Containerfile").read_text()


def test_state_directory_is_each_pods_own_volume():
    (claim,) = STATEFULSET["spec"]["volumeClaimTemplates"]
    assert mount(claim["metadata"]["name"]) == "/var/lib/streamguard"
    assert "STATE_DIRECTORY=/var/lib/streamguard" in (CONTAINER / "Containerfile").read_text()
    assert STATEFULSET["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_grace_period_covers_the_prestop_wait_and_the_drain(settings):
    command = DAEMON["lifecycle"]["preStop"]["exec"]["command"]
    assert command[1:3] == ["/usr/local/lib/streamguard/probe.py", "wait-idle"]
    assert (
        f"COPY --chmod=0644 container/probe.py {command[1]}"
        in (CONTAINER / "Containerfile").read_text()
    )
    wait = float(command[command.index("--max-seconds") + 1])
    drain = (
        settings.model.max_lag_seconds  # buffered windows still scored, older ones dropped
        + daemon.FLUSH_LOG_SECONDS  # the event log's last commit
        + daemon.FLUSH_SECONDS  # subscribers receive the last events
        + settings.alerts.close_timeout_seconds  # ... and their close handshake
    )
    assert POD["terminationGracePeriodSeconds"] >= wait + drain


def test_runs_as_the_images_non_root_user_read_only():
    user = re.search(r"^USER (\d+):(\d+)$", (CONTAINER / "Containerfile").read_text(), re.M)
    uid, gid = user.groups()
    pod_security = POD["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (int(uid), int(gid))
    assert pod_security["fsGroup"] == int(gid)
    assert DAEMON["securityContext"]["readOnlyRootFilesystem"] is True
    assert DAEMON["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert POD["automountServiceAccountToken"] is False


def test_image_is_rewritten_to_the_registry():
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    (image,) = kustomization["images"]
    assert DAEMON["image"] == f"{image['newName']}:{image['newTag']}"


# -- selectors, names and the fleet ----------------------------------------------------------


def matches(selector: dict, template: dict) -> bool:
    labels = template["metadata"]["labels"]
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def test_selectors_find_the_daemon_pods():
    template = STATEFULSET["spec"]["template"]
    assert matches(STATEFULSET["spec"]["selector"], template)
    for service in (one("Service", "streamguard"), one("Service", "streamguard-pods")):
        assert matches(service["spec"]["selector"], template), service["metadata"]["name"]
    assert matches(one("PodDisruptionBudget", "streamguard")["spec"]["selector"], template)
    headless = one("Service", STATEFULSET["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_redis_is_where_the_config_sends_the_events(settings):
    assert settings.events.backend == "redis"
    url = urlsplit(settings.events.redis_url)
    redis = one("Service", url.hostname)
    (port,) = redis["spec"]["ports"]
    assert port["port"] == (url.port or 6379)
    redis_set = one("StatefulSet", "streamguard-redis")
    assert matches(redis["spec"]["selector"], redis_set["spec"]["template"])
    args = " ".join(containers(redis_set)[0]["args"])
    assert "--appendonly yes" in args  # docs/operations.md: make Redis durable
    policy = one("NetworkPolicy", "streamguard-redis")
    assert matches(policy["spec"]["podSelector"], redis_set["spec"]["template"])
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert matches(source["podSelector"], STATEFULSET["spec"]["template"])


def daemon_gauges() -> set[str]:
    return {f.name for f in Metrics().registry.collect() if f.type == "gauge"}


def adapter_rules() -> list[dict]:
    config_map = one("ConfigMap", "adapter-config")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def test_hpa_scales_the_statefulset_on_the_daemons_own_gauges():
    hpa = one("HorizontalPodAutoscaler", "streamguard")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        STATEFULSET["apiVersion"],
        STATEFULSET["kind"],
        STATEFULSET["metadata"]["name"],
    )
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert names == {"streamguard_calls_active", "streamguard_engine_utilization"}
    assert names <= daemon_gauges(), names - daemon_gauges()
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert names <= served, f"no adapter rule serves {names - served}"


def test_adapter_rules_query_series_the_daemon_exports():
    gauges = daemon_gauges()
    for rule in adapter_rules():
        series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
        assert series in gauges, series
        assert re.fullmatch(rule["name"]["matches"], series)
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        assert "<<.Series>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_kubectl_commands_in_the_docs_name_real_files():
    text = (ROOT / "deploy" / "README.md").read_text()
    for line in re.findall(r"^\s*kubectl apply .*$", text, re.M):
        for word in shlex.split(line, comments=True):
            if word.startswith("deploy/kubernetes"):
                assert (ROOT / word).exists(), line
