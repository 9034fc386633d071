# syntax=docker/dockerfile:1
# payops: the HTTP API, the Slack app and the runbook CLI, in one image.
#
#   docker build -t payops:0.1.0 .
#   docker run --rm --env-file payops.env payops:0.1.0 migrate        # once per release, first
#   docker run -d -p 8080:8080 --env-file payops.env payops:0.1.0     # serve (the default)
#   docker run --rm --env-file payops.env payops:0.1.0 preflight      # deploy-day checks
#   docker run --rm --env-file payops.env -v "$PWD/snapshots:/snapshots" \
#       payops:0.1.0 snapshot --out /snapshots
#
# Every setting is an environment variable (docs/CONFIGURATION.md); docs/OPERATIONS.md has
# the deploy and rollback sequences. Dependencies are the exact versions in requirements.lock.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a wheel of every pinned dependency, then the payops wheel ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first: this layer is rebuilt only when requirements.lock changes.
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY core ./core
COPY api ./api
COPY bot ./bot
COPY payops ./payops
COPY localnet ./localnet
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: the wheels installed from /wheels only, run as a user without privileges -----
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PAYOPS_HTTP_HOST=0.0.0.0 \
    PAYOPS_HTTP_PORT=8080 \
    PAYOPS_DATA_DIR=/home/payops/data
RUN groupadd --system --gid 10001 payops \
    && useradd --system --uid 10001 --gid payops --create-home --home-dir /home/payops \
       --shell /usr/sbin/nologin payops
# The wheels and the lock are mounted for this one step, so neither stays in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    pip install --no-cache-dir --no-index --find-links /wheels --constraint /tmp/requirements.lock payops
USER 10001:10001
WORKDIR /home/payops
EXPOSE 8080
# Liveness only (the process answers); /readyz also checks the database and the RPC.
# python:3.11-slim has no curl, so the probe is Python's own urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PAYOPS_HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["payops"]
CMD ["serve"]
