# syntax=docker/dockerfile:1
# The one infertide image: Faust workers (`infertide worker`) and Ray nodes (KubeRay
# runs `ray start` in it; Serve imports workers.app:build_app) run the same code.
#
#   docker build -t infertide:0.1.0-cpu .
#   docker build --build-arg VARIANT=cuda -t infertide:0.1.0-cuda .
#
# VARIANT=cpu installs torch from PyPI as-is. VARIANT=cuda installs torch and
# torchvision first from PyTorch's CUDA wheel index (TORCH_CUDA_INDEX), which
# bundles the CUDA runtime and cuDNN as wheels, so both variants share one slim
# Python base and the GPU node only needs the NVIDIA driver and device plugin.
# The base is pinned by its full tag, written out in both stages (scanners cannot
# resolve an ARG in FROM); bump both together.
FROM python:3.11.11-slim-bookworm AS build
ARG VARIANT=cpu
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu124
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# The package metadata first, so the dependency layer is rebuilt only when it changes.
COPY pyproject.toml README.md ./
RUN case "$VARIANT" in \
      cpu) ;; \
      cuda) pip install torch torchvision --index-url "$TORCH_CUDA_INDEX" ;; \
      *) echo "VARIANT must be cpu or cuda, got '$VARIANT'" >&2; exit 1 ;; \
    esac
COPY schemas ./schemas
COPY workers ./workers
COPY topologies ./topologies
COPY infertide ./infertide
RUN pip install . && pip check

FROM python:3.11.11-slim-bookworm AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="infertide" \
      org.opencontainers.image.description="Streaming inference: Kafka -> Faust -> Ray Serve -> Kafka" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.infertide.variant="${VARIANT}"
# wget: KubeRay's default Ray health probes call it. libgl/glib: OpenCV (ultralytics).
# tini: forwards SIGTERM so the Faust worker commits before it exits.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget tini libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 infertide \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/infertide --shell /bin/bash infertide \
    && mkdir -p /etc/infertide /var/lib/infertide \
    && chown 10001:10001 /var/lib/infertide
COPY --from=build /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/infertide \
    INFERTIDE_CONFIG=/etc/infertide/topology.yaml \
    RAY_USAGE_STATS_ENABLED=0 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /var/lib/infertide
USER 10001:10001
EXPOSE 6066 8000 8080 8265 6379
# Kubernetes probes each role (Faust /healthz, KubeRay's Ray probes); a standalone
# container checks that the package imports and the topology loads.
HEALTHCHECK --interval=30s --timeout=10s --retries=3 \
    CMD ["python", "-c", "import schemas.topology as t; t.load_topology()"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["infertide", "worker", "--config", "/etc/infertide/topology.yaml"]
