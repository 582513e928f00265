# One image for every Ballast process; the command picks which one runs:
#   (default)                            python -m balancer --config /etc/ballast/ballast.toml
#   -m dashboard --host 0.0.0.0          the dashboard (ASGI, the collector embedded)
#   manage.py runcollector               the collector alone (several dashboard processes)
#   manage.py migrate                    the database schema (the dashboard's --migrate does it too)
#   -m demo.workload / -m demo.loadgen   the demo workload and its load clients
#
#   docker build -t ballast:dev .
#
# No HEALTHCHECK: probes come from Kubernetes (grpc.health.v1 on the balancer's admin
# port). The root filesystem can be read-only: Python writes no bytecode at run time,
# and what is written goes to /tmp and /data (volumes on Kubernetes).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- plotly.js: the one browser script that is not ours, as package-lock.json pins it ---
FROM node:20-bookworm-slim AS plotly
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts

# --- builder: wheels for every dependency, installed into a venv ------------------------
FROM ${PYTHON_IMAGE} AS builder

# A compiler only for a dependency without a wheel for this platform; never in the final stage.
# Debian's versions are not pinned: a release of bookworm only takes security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml ./
# The dependencies (and the Postgres driver for DATABASE_URL) as pyproject.toml pins them;
# the code itself is copied as source into /app, beside templates/ and manage.py.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > requirements.txt \
    && pip wheel --wheel-dir /wheels -r requirements.txt \
    && python -m venv /opt/ballast \
    && /opt/ballast/bin/pip install --no-index --find-links /wheels -r requirements.txt

# --- final: the venv, the source, haproxy; no compiler, no pip cache --------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ballast" \
      org.opencontainers.image.description="See and fix gRPC load imbalance: an L7 gRPC balancer and a live per-pod dashboard." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.documentation="README.md, section On Kubernetes"

# haproxy: the HAProxy engine runs it as a child process. tini: PID 1 that forwards
# SIGTERM and reaps what the children leave behind.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ballast \
    && useradd --system --uid 10001 --gid ballast --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin ballast \
    && mkdir -p /data /etc/ballast \
    && chown ballast:ballast /data

COPY --from=builder /opt/ballast /opt/ballast
WORKDIR /app
COPY manage.py ./
COPY templates/ templates/
COPY balancer/ balancer/
COPY dashboard/ dashboard/
COPY platforms/ platforms/
COPY demo/ demo/
COPY --from=plotly /src/node_modules/plotly.js-basic-dist-min/plotly-basic.min.js \
     dashboard/app/static/vendor/plotly.min.js
# Bytecode made now, as root, so a read-only root filesystem costs no start-up time.
RUN python -m compileall -q /app

ENV PATH=/opt/ballast/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    BALLAST_DB_PATH=/data/ballast.sqlite3

# Numeric, so Kubernetes' runAsNonRoot can verify it without the image's /etc/passwd.
USER 10001:10001
EXPOSE 50051 9901 9902 8000
ENTRYPOINT ["/usr/bin/tini", "--", "python"]
CMD ["-m", "balancer", "--config", "/etc/ballast/ballast.toml"]
