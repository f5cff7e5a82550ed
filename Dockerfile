# syntax=docker/dockerfile:1
# The Stepwise controller image: `docker build -t stepwise .` at the repository root.
#
# Two stages: the builder installs the locked runtime dependencies (uv.lock, honoured with
# --frozen: the build fails rather than resolve anything anew) and the controller itself
# into /app/.venv; the final image is the same slim Python with that virtualenv, a
# non-root user and nothing else (no uv, no compiler, no dev dependencies, no tests).
# The chart (charts/stepwise) and deploy/ run it with a read-only root filesystem, so
# bytecode is compiled at build time and Python never writes next to its sources.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# The uv release the Makefile pins (UV_VERSION), installed from PyPI like `make` does.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first (their layer is reused until pyproject.toml or uv.lock changes) ...
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
# ... then the controller, installed as a wheel (not editable: /src is not kept).
COPY README.md ./
COPY controller ./controller
RUN uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="stepwise" \
      org.opencontainers.image.description="Stepwise: a progressive-delivery canary controller for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid, so that runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 stepwise \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin stepwise
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# /healthz, /readyz and /metrics (--health-port).
EXPOSE 8081
ENTRYPOINT ["/app/.venv/bin/stepwise", "run"]
