# onnx-serve images (docs/docker.md). Needs BuildKit (the default builder since Docker 23).
#   CPU: docker build -t onnx-serve:0.1.0 .
#   GPU: docker build --build-arg VARIANT=gpu -t onnx-serve:0.1.0-gpu .
#   Offline, from a local base and host wheels: deploy/docker/build_local.sh
# Pin the bases by digest for bit-for-bit rebuilds: BASE_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG BASE_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu 1.31 is built for CUDA 13 and cuDNN 9.
ARG GPU_BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
# cpu or gpu: picks the *-base stage and deploy/docker/requirements-$VARIANT.txt.
ARG VARIANT=cpu

# CPU: Debian bookworm's Python 3.11 image; jemalloc and tini pinned to bookworm's versions.
FROM ${BASE_IMAGE} AS cpu-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2=5.3.0-1 tini=0.19.0-1+b3 \
    && apt-get clean && rm -rf /var/lib/apt/lists/*

# GPU: CUDA/cuDNN runtime on Ubuntu 24.04 with its Python 3.12. TensorRT is optional: its
# libraries come from the NVIDIA repository the CUDA image already lists, e.g.
# --build-arg TENSORRT_PACKAGES="libnvinfer10 libnvinfer-plugin10 libnvonnxparsers10" (docs/docker.md).
FROM ${GPU_BASE_IMAGE} AS gpu-base
ARG TENSORRT_PACKAGES=""
# The versions follow the CUDA image's Ubuntu release (pin GPU_BASE_IMAGE by digest to freeze them);
# Ubuntu's security updates replace exact versions, so pinning them here would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libjemalloc2 tini \
        ${TENSORRT_PACKAGES} \
    && apt-get clean && rm -rf /var/lib/apt/lists/*

# deps: a venv with exactly the locked dependencies; its layer is reused while only app/ changes.
FROM ${VARIANT}-base AS deps
ARG VARIANT
# The offline build passes PIP_NO_INDEX=1 and puts every wheel in deploy/docker/wheels/.
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=/wheels
WORKDIR /src
COPY deploy/docker/wheels/ /wheels/
COPY deploy/docker/requirements-build.txt deploy/docker/requirements-${VARIANT}.txt deploy/docker/
# /opt/build holds pip and setuptools; /opt/venv (what ships) gets no pip at all.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install -r deploy/docker/requirements-build.txt \
    && python3 -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps \
        -r deploy/docker/requirements-${VARIANT}.txt

# builder: the onnx-serve wheel, installed once under /staging (the small layer that ships) and
# once into the venv to check that the whole set is consistent. onnxruntime-gpu provides the
# `onnxruntime` module under another distribution name: the one complaint `pip check` may make.
FROM deps AS builder
ARG VARIANT
COPY pyproject.toml README.md ./
COPY app/ app/
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation -w /dist . \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps \
        --no-warn-script-location --root /staging /dist/*.whl \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps /dist/*.whl \
    && { /opt/build/bin/pip --python /opt/venv/bin/python check >/tmp/pip-check.txt \
        || { cat /tmp/pip-check.txt; [ "$VARIANT" = gpu ] && ! grep -vxE \
            'onnx-serve .* requires onnxruntime, which is not installed\.' /tmp/pip-check.txt; }; }

FROM ${VARIANT}-base AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="onnx-serve" \
      org.opencontainers.image.description="KServe v2 / Triton-compatible server for ONNX models ($VARIANT)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 onnx \
    && useradd --system --uid 10001 --gid onnx --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin onnx
COPY --from=deps /opt/venv /opt/venv
COPY --from=builder /staging/ /
# The example repository is the default content of the volume; mount your own over /models.
COPY model_repository/ /models/
# LD_PRELOAD without a path: the loader finds jemalloc on any architecture. jemalloc hands the
# memory of unloaded models back to the OS (bench/reload_rss.py); glibc's malloc keeps it.
# No .pyc writes: the root filesystem may be read-only (pip already compiled the venv).
# onnxruntime >= 1.29 sends usage telemetry from Linux unless told not to: a server must not
# phone home (and often cannot). Files the server writes (optimized models, TensorRT caches)
# go under /tmp, the one writable place (a tmpfs / emptyDir) when the root filesystem is not.
ENV PATH=/opt/venv/bin:$PATH \
    LD_PRELOAD=libjemalloc.so.2 \
    ORT_DISABLE_TELEMETRY=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ONNX_SERVE_HOST=0.0.0.0 \
    ONNX_SERVE_HTTP__PORT=8000 \
    ONNX_SERVE_GRPC__PORT=8001 \
    ONNX_SERVE_REPOSITORY__PATH=/models \
    ONNX_SERVE_REPOSITORY__CACHE_DIR=/tmp/onnx-serve-cache
VOLUME ["/models"]
EXPOSE 8000 8001
USER 10001:10001
WORKDIR /tmp
# Docker's own health state follows readiness (503 while loading or draining). Slim images have
# no curl: the venv's Python asks instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ONNX_SERVE_HTTP__PORT', '8000') + '/v2/health/ready', timeout=2)"]
# tini forwards SIGTERM to the server (which drains, then exits 0) and reaps strays.
ENTRYPOINT ["/usr/bin/tini", "--", "onnx-serve"]
