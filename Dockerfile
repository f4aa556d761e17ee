# syntax=docker/dockerfile:1
# Sluice's service image: Gunicorn + Uvicorn workers running service.main:app
# with deploy/gunicorn.conf.py. The same image runs the one-shot `migrate` and
# `config` services of docker-compose.prod.yml and the Kubernetes Jobs.
#
# Python matches the lock files (uv pip compile --python-version 3.11).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: resolve the locked runtime dependencies into a venv ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# Every runtime dependency ships manylinux wheels, so no compiler is needed;
# --only-binary makes a missing wheel fail the build instead of compiling.
RUN /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements.lock

# --- runtime: no pip cache, no build tools, non-root ------------------------
FROM ${PYTHON_IMAGE}
# gettext-base provides envsubst for deploy/render-templates.sh (the compose
# `config` service renders the PgBouncer/PostgreSQL/Prometheus templates).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gettext-base=0.21-12 \
    && rm -rf /var/lib/apt/lists/*

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SLUICE_BIND_HOST=0.0.0.0 \
    SLUICE_BIND_PORT=8000 \
    SLUICE_PROBE_PORT=8001 \
    SLUICE_METRICS_HOST=0.0.0.0 \
    SLUICE_METRICS_PORT=9200 \
    SLUICE_METRICS_MULTIPROC_DIR=/run/sluice/metrics

# /run/sluice is where a tmpfs is mounted (compose `tmpfs:`, Kubernetes
# emptyDir medium Memory) for the Prometheus multiprocess files: it must be the
# *parent* of the multiprocess dir, because gunicorn.conf.py removes and
# re-creates that dir on start. /config/* are the mount points of the rendered
# config volumes: created here, owned by the app user, so Docker copies that
# ownership into a new named volume and the non-root `config` service can write;
# /var/lib/sluice-alerts is the alert receiver's volume, for the same reason.
RUN groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid sluice --no-create-home --shell /usr/sbin/nologin sluice \
    && mkdir -p /run/sluice /config/pgbouncer /config/postgres /config/prometheus \
        /config/alertmanager /config/pgbouncer-exporter /config/postgres-exporter \
        /var/lib/sluice-alerts \
    && chown -R sluice:sluice /run/sluice /config /var/lib/sluice-alerts

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
COPY service ./service
COPY deploy/gunicorn.conf.py deploy/render-templates.sh deploy/defaults.env \
    deploy/alert_receiver.py ./deploy/
RUN python -m compileall -q service migrations deploy

USER 10001:10001
EXPOSE 8000 8001 9200

# Liveness only (/healthz touches nothing else); readiness (/readyz) is for
# load balancers and Kubernetes, not for restarting the container. Both on the
# probe port, which answers even while every request slot is busy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/healthz', timeout=2)"]

# Exec form: Gunicorn is PID 1 and receives SIGTERM itself (graceful drain).
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "service.main:app"]
