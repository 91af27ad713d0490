# One image for the root, the workers and the model downloader.
# BASE_IMAGE defaults to Debian's official image; with no registry, scripts/build-base-image.sh
# makes the same thing locally with debootstrap + docker import.
ARG BASE_IMAGE=debian:trixie-slim
FROM ${BASE_IMAGE} AS deps
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1
# Debian's torch is a CPU build on amd64 and arm64 alike (PyPI's x86 torch drags in CUDA, GBs);
# OpenBLAS replaces the reference BLAS it would otherwise get: prefill is ~20x faster.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-torch libopenblas0-openmp python3-numpy python3-flask python3-requests \
      python3-docker python3-yaml python3-psutil python3-prometheus-client gunicorn ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A venv over Debian's packages: pip adds what Debian lacks without touching apt's files.
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
# wheels/ is empty for users who reach PyPI; scripts/prepare-wheels.sh fills it where a build can't.
COPY wheels /tmp/wheels
RUN if ls /tmp/wheels/*.whl >/dev/null 2>&1; then PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels; export PIP_NO_INDEX PIP_FIND_LINKS; fi \
 && pip install -r /tmp/requirements.txt
WORKDIR /app

# The test image: the dependencies plus the browser, the docker client and the test tools; the code
# is mounted, not copied, so a code change does not rebuild it.
FROM deps AS dev
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      chromium docker-cli docker-compose python3-hypothesis python3-matplotlib python3-psutil \
      fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
COPY requirements-dev.txt /tmp/requirements-dev.txt
RUN if ls /tmp/wheels/*.whl >/dev/null 2>&1; then PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels; export PIP_NO_INDEX PIP_FIND_LINKS; fi \
 && pip install -r /tmp/requirements-dev.txt && rm -rf /tmp/wheels

# The service image (root, workers, downloader): the dependencies plus the code.
FROM deps AS runtime
WORKDIR /app
COPY common ./common
COPY backend ./backend
COPY worker ./worker
COPY frontend ./frontend
COPY model_downloader ./model_downloader
