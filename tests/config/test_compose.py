"""docker-compose.prod.yml against the Compose Specification and against the code."""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.envfile import read_env_file
from tests.config import deployment
from tests.config.deployment import COMPOSE_FILE, ROOT


def test_validates_against_the_compose_specification_schema() -> None:
    result = subprocess.run(
        [
            deployment.tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_accepts_it(staging_env_file: Path) -> None:
    """The real Compose v2 parser (interpolation, env_files, references), without an engine."""
    result = deployment.run_compose(staging_env_file, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_has_no_version_key() -> None:
    assert "version" not in yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.mark.parametrize(
    "missing",
    [
        "SLUICE_SECRET_KEY",
        "SLUICE_DB_PASSWORD",
        "POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "PGBOUNCER_STATS_PASSWORD",
        "POSTGRES_MONITOR_PASSWORD",
        "SLUICE_RUNBOOK_URL",
        "FIRST_SUPERUSER_PASSWORD",
    ],
)
def test_refuses_to_start_without_a_secret(
    staging_env_file: Path, tmp_path: Path, missing: str
) -> None:
    text = re.sub(rf"(?m)^{missing}=.*$", f"{missing}=", staging_env_file.read_text())
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    result = deployment.run_compose(env_file, "config", "--quiet")
    assert result.returncode != 0
    assert missing in result.stderr and ".env.example" in result.stderr


def test_the_unfilled_example_is_refused() -> None:
    result = deployment.run_compose(ROOT / ".env.example", "config", "--quiet")
    assert result.returncode != 0, "copying .env.example without filling it must not start"


def test_every_interpolated_variable_is_documented_in_env_example() -> None:
    without_comments = re.sub(r"(?m)#.*$", "", COMPOSE_FILE.read_text())
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", without_comments))
    documented = set(read_env_file(ROOT / ".env.example"))
    assert used - documented == set()


def test_no_secret_is_written_in_the_file() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert deployment.inline_secret_problems(raw) == []


# --------------------------------------------------------------------------
# Parity with the code


def test_renders_every_template_dir_of_the_local_stack(
    compose_model: dict[str, Any], template_dirs: list[Path]
) -> None:
    assert deployment.template_mount_problems(compose_model, template_dirs) == []


def test_each_renderer_renders_its_templates_completely(
    compose_model: dict[str, Any], template_dirs: list[Path], tmp_path: Path
) -> None:
    """Runs deploy/render-templates.sh with each compose service's environment."""
    assert deployment.template_render_problems(compose_model, template_dirs, tmp_path) == []


def test_sets_what_the_local_stack_sets(
    compose_model: dict[str, Any], template_dirs: list[Path], tmp_path: Path
) -> None:
    local_env = deployment.local_stack_environment(tmp_path)
    assert deployment.local_environment_problems(compose_model, local_env, template_dirs) == []


def test_app_environment_is_settings_fields_and_validates(
    compose_model: dict[str, Any], template_dirs: list[Path]
) -> None:
    assert deployment.settings_env_problems(compose_model, template_dirs) == []


def test_app_healthcheck_is_liveness(compose_model: dict[str, Any]) -> None:
    # Docker restarts what it finds unhealthy (Swarm, autoheal): a readiness
    # check there would restart every app container during a database outage.
    test = " ".join(compose_model["services"]["app"]["healthcheck"]["test"])
    assert deployment.url_paths(test) == ["/healthz"], test


def test_healthcheck_paths_exist_in_the_app(compose_model: dict[str, Any]) -> None:
    paths = deployment.app_get_paths()
    assert {"/healthz", "/readyz"} <= paths
    assert deployment.health_path_problems(compose_model, paths) == []
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert deployment.url_paths(dockerfile) and all(
        p in paths for p in deployment.url_paths(dockerfile)
    )


def test_only_the_edge_publishes_ports(compose_model: dict[str, Any]) -> None:
    assert deployment.published_port_problems(compose_model) == []


def test_healthchecks_conditions_restarts_limits_pinned_images(
    compose_model: dict[str, Any],
) -> None:
    assert deployment.robustness_problems(compose_model) == []


def test_app_matches_sizing_and_gunicorn(compose_model: dict[str, Any]) -> None:
    sizing = read_env_file(deployment.SIZING_ENV)
    assert deployment.app_shape_problems(compose_model, sizing) == []


def test_config_files_beyond_templates_are_the_repo_files(compose_model: dict[str, Any]) -> None:
    """Rules, mtail programs and Grafana provisioning come from the repo paths."""
    from deploy import observability

    mounted = {
        Path(v["source"]).resolve()
        for s in compose_model["services"].values()
        for v in s.get("volumes", [])
        if v.get("type") == "bind"
    }
    for path in (
        observability.PROMETHEUS_DIR / "rules",
        observability.MTAIL_PROGS,
        ROOT / "deploy" / "postgres-init",
        ROOT / "grafana" / "provisioning",
        ROOT / "grafana" / "dashboards",
    ):
        assert path.resolve() in mounted, f"{path.relative_to(ROOT)} is not mounted"
    env_files = {Path(f) for s in ("config", "nginx") for f in _env_files(s)}
    assert ROOT / "deploy" / "defaults.env" in env_files
    assert (
        'CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "service.main:app"]'
        in (ROOT / "Dockerfile").read_text()
    )


def test_grafana_gets_what_its_provisioning_files_read(compose_model: dict[str, Any]) -> None:
    grafana = compose_model["services"]["grafana"]
    provisioning = ROOT / "grafana" / "provisioning"
    needed = set()
    for path in provisioning.rglob("*.yml"):
        text = re.sub(r"(?m)#.*$", "", path.read_text())
        needed |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", text))
    assert needed - set(grafana["environment"]) == set()
    targets = {v["target"] for v in grafana["volumes"]}
    for path in (provisioning / "dashboards").glob("*.yml"):
        for provider in yaml.safe_load(path.read_text())["providers"]:
            assert provider["options"]["path"] in targets


def test_staging_mail_goes_to_a_pinned_internal_mail_catcher(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    catcher = services["mailcatcher"]
    image = catcher["image"]
    assert image.startswith("dockage/mailcatcher:") and image.rsplit(":", 1)[1] != "latest"
    assert set(catcher["networks"]) == {"backend"} and not catcher.get("ports")
    assert compose_model["networks"]["backend"]["internal"] is True
    app = deployment.settings_from_env(services["app"]["environment"])
    assert (app.smtp_host, str(app.smtp_port)) == ("mailcatcher", "1025")
    assert "1025" in catcher["expose"] and not (app.smtp_tls or app.smtp_ssl)
    assert app.emails_from_email and app.first_superuser_password is None
    # Only the one-shot migrate service gets the first superuser's password.
    migrate = deployment.settings_from_env(services["migrate"]["environment"])
    assert migrate.first_superuser and migrate.first_superuser_password is not None
    assert [
        n for n, s in services.items() if "FIRST_SUPERUSER_PASSWORD" in (s.get("environment") or {})
    ] == ["migrate"]


def _env_files(service: str) -> list[str]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    files = raw["services"][service].get("env_file", [])
    return [str(ROOT / f) for f in ([files] if isinstance(files, str) else files)]


# --------------------------------------------------------------------------
# The checks catch drift: each mutation of the resolved model is reported.


def _services(model: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = model["services"]
    return services


def _move_nginx_templates(m: dict[str, Any]) -> None:
    for volume in _services(m)["nginx"]["volumes"]:
        if volume["target"] == "/etc/nginx/templates":
            volume["source"] = str(ROOT / "nginx")


def _drop_template_variable(m: dict[str, Any]) -> None:
    del _services(m)["config"]["environment"]["PGBOUNCER_LISTEN_PORT"]


def _misspell_a_setting(m: dict[str, Any]) -> None:
    _services(m)["app"]["environment"]["SLUICE_DB_POOLSIZE"] = "5"


def _break_the_sizing_check(m: dict[str, Any]) -> None:
    _services(m)["app"]["environment"]["SLUICE_DB_MAX_OVERFLOW"] = "50"


def _rename_health_path(m: dict[str, Any]) -> None:
    test = _services(m)["app"]["healthcheck"]["test"]
    _services(m)["app"]["healthcheck"]["test"] = [t.replace("/healthz", "/health") for t in test]


def _publish_postgres(m: dict[str, Any]) -> None:
    _services(m)["postgres"]["ports"] = [{"target": 5432, "published": "5432"}]


def _postgres_on_the_edge(m: dict[str, Any]) -> None:
    _services(m)["postgres"]["networks"]["edge"] = None


def _unpin_an_image(m: dict[str, Any]) -> None:
    _services(m)["prometheus"]["image"] = "prom/prometheus:latest"


def _drop_a_healthcheck(m: dict[str, Any]) -> None:
    _services(m)["pgbouncer"]["healthcheck"] = {"disable": True}


def _start_app_before_migrations(m: dict[str, Any]) -> None:
    _services(m)["app"]["depends_on"]["migrate"]["condition"] = "service_started"


def _scale_without_resizing(m: dict[str, Any]) -> None:
    _services(m)["app"]["deploy"]["replicas"] = 5


def _docker_default_stop_timeout(m: dict[str, Any]) -> None:
    _services(m)["app"]["stop_grace_period"] = "10s"


def _publish_the_mail_catcher(m: dict[str, Any]) -> None:
    _services(m)["mailcatcher"]["ports"] = [{"target": 1080, "published": "1080"}]


def _multiproc_dir_off_tmpfs(m: dict[str, Any]) -> None:
    _services(m)["app"]["environment"]["SLUICE_METRICS_MULTIPROC_DIR"] = "/var/sluice-metrics"


DRIFTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "nginx templates moved": (_move_nginx_templates, "nginx/templates is rendered"),
    "template variable dropped": (_drop_template_variable, "PGBOUNCER_LISTEN_PORT"),
    "misspelt setting": (_misspell_a_setting, "SLUICE_DB_POOLSIZE is not a field"),
    "inconsistent limits": (_break_the_sizing_check, "refuses this environment"),
    "health path renamed": (_rename_health_path, "/health is not a GET route"),
    "postgres published": (_publish_postgres, "postgres publishes a port"),
    "postgres on the edge": (_postgres_on_the_edge, "postgres joins ['edge']"),
    "image unpinned": (_unpin_an_image, "is not pinned"),
    "healthcheck dropped": (_drop_a_healthcheck, "pgbouncer: long-running service without"),
    "no wait for migrations": (_start_app_before_migrations, "should wait for service_completed"),
    "scaled without resizing": (_scale_without_resizing, "deploy.replicas (5) != SLUICE_REPLICAS"),
    "docker's 10 s stop timeout": (_docker_default_stop_timeout, "must exceed Gunicorn's"),
    "multiproc dir off tmpfs": (_multiproc_dir_off_tmpfs, "not strictly inside a tmpfs"),
    "mail catcher published": (_publish_the_mail_catcher, "mailcatcher publishes a port"),
}


def _all_problems(model: dict[str, Any], template_dirs: list[Path], tmp: Path) -> list[str]:
    sizing = read_env_file(deployment.SIZING_ENV)
    problems = [
        *deployment.template_mount_problems(model, template_dirs),
        *deployment.template_render_problems(model, template_dirs, tmp),
        *deployment.settings_env_problems(model, template_dirs),
        *deployment.health_path_problems(model, deployment.app_get_paths()),
        *deployment.published_port_problems(model),
        *deployment.robustness_problems(model),
    ]
    try:
        problems += deployment.app_shape_problems(model, sizing)
    except ValueError as exc:  # settings refused: already reported above
        problems.append(str(exc))
    return problems


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_drift_is_reported(
    compose_model: dict[str, Any], template_dirs: list[Path], tmp_path: Path, drift: str
) -> None:
    mutate, expected = DRIFTS[drift]
    model = copy.deepcopy(compose_model)
    mutate(model)
    problems = _all_problems(model, template_dirs, tmp_path)
    assert any(expected in p for p in problems), problems


def test_pgbouncer_exporter_uses_the_stats_user(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    stats_user = services["config"]["environment"]["PGBOUNCER_STATS_USER"]
    assert stats_user != services["config"]["environment"]["SLUICE_DB_USER"]
    command = " ".join(services["pgbouncer-exporter"]["command"])
    assert f"://{stats_user}@" in command, command
    ini = (ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini.template").read_text()
    assert "\nadmin_users =\n" in ini and "stats_users = ${PGBOUNCER_STATS_USER}" in ini


EXPORTER_PASSWORD_FILES = {
    "pgbouncer-exporter": ("PGPASSFILE", "pgbouncer-exporter"),
    "postgres-exporter": ("DATA_SOURCE_PASS_FILE", "postgres-exporter"),
}


def test_no_password_on_a_command_line_and_the_exporters_read_files(
    compose_model: dict[str, Any], staging_env_file: Path
) -> None:
    """What `ps` and `docker inspect` show of the exporters holds no password."""
    env_file = read_env_file(staging_env_file)
    passwords = {v for k, v in env_file.items() if "PASSWORD" in k or "SECRET" in k if v}
    services = _services(compose_model)
    for name, service in services.items():
        argv = " ".join(
            [*(service.get("entrypoint") or []), *(service.get("command") or [])]
            + [str(t) for t in (service.get("healthcheck") or {}).get("test") or []]
        )
        assert not [p for p in passwords if p in argv], f"{name}: a password on its command line"
    config = services["config"]
    rendered_by_config = {
        v["source"]: v["target"] for v in config["volumes"] if v.get("type") == "volume"
    }
    config_command = " ".join(config["command"])
    for name, (variable, template_dir) in EXPORTER_PASSWORD_FILES.items():
        service = services[name]
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        assert not [k for k, v in env.items() if any(p in v for p in passwords)], name
        assert not {"DATA_SOURCE_PASS", "DATA_SOURCE_NAME", "PGPASSWORD"} & set(env), name
        path = Path(env[variable])
        (mount,) = [v for v in service["volumes"] if path.parent == Path(v["target"])]
        assert mount.get("read_only"), f"{name}: its credentials volume is writable"
        # `config` renders this exporter's own template dir into that volume.
        target = rendered_by_config[mount["source"]]
        assert f"/templates/{template_dir} {target}" in config_command, (name, target)
        assert (ROOT / "deploy" / template_dir / f"{path.name}.template").exists()
        # 0600 files written by `config` (the image's user): read by the same user.
        assert service.get("user") == "10001:10001", f"{name} cannot read a 0600 file of 10001"
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text()


def test_postgres_exporter_uses_the_monitoring_role(compose_model: dict[str, Any]) -> None:
    services = _services(compose_model)
    defaults = read_env_file(ROOT / "deploy" / "defaults.env")
    monitor = defaults["POSTGRES_MONITOR_USER"]
    assert services["postgres"]["environment"]["POSTGRES_MONITOR_USER"] == monitor
    assert monitor != services["config"]["environment"]["SLUICE_DB_USER"]
    exporter = services["postgres-exporter"]["environment"]
    assert "DATA_SOURCE_USER" not in exporter, "the name comes from the rendered user file"
    user_template = ROOT / "deploy" / "postgres-exporter" / "user.template"
    assert Path(exporter["DATA_SOURCE_USER_FILE"]).name == user_template.stem
    assert user_template.read_text().strip() == "${POSTGRES_MONITOR_USER}"


def test_operator_uis_are_published_on_loopback(compose_model: dict[str, Any]) -> None:
    for name in ("grafana", "alertmanager"):
        ports = _services(compose_model)[name]["ports"]
        assert [p["host_ip"] for p in ports] == ["127.0.0.1"], (name, ports)


def test_alerts_route_from_prometheus_to_the_receiver(
    compose_model: dict[str, Any], tmp_path: Path
) -> None:
    """The rendered Alertmanager config is valid and its default route is the receiver."""
    services = _services(compose_model)
    env = {k: str(v) for k, v in services["config"]["environment"].items()}
    out = tmp_path / "alertmanager"
    assert deployment.render(ROOT / "deploy" / "alertmanager", out, env) == ""
    config = out / "alertmanager.yml"
    check = subprocess.run(
        [deployment.tool("amtool"), "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    route = yaml.safe_load(config.read_text())
    (receiver,) = [r for r in route["receivers"] if r["name"] == route["route"]["receiver"]]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["send_resolved"]
    match = re.fullmatch(r"http://([\w-]+):(\d+)/", webhook["url"])
    assert match, webhook["url"]
    host, port = match.groups()
    assert port in services[host]["expose"], (host, port)
    assert env["PROMETHEUS_TARGET_ALERTMANAGER"] == "alertmanager:9093"
    assert "9093" in services["alertmanager"]["expose"]
