# One Dockerfile, two images that share every dependency layer:
#   runtime (docker-distributed-llm:local): root, workers and model downloader, as user `app`;
#   dev     (docker-distributed-llm:dev):   the same dependencies plus the browser, the docker client
#                                           and the test tools; the code is mounted, not copied.
# Built with BuildKit (docker compose builds with it; scripts/up and scripts/test build through
# compose): wheels/ is bind-mounted into the pip steps only, so no wheel lands in any image.
# BASE_IMAGE defaults to Debian's official image; with no registry, scripts/build-base-image.sh
# makes the same thing locally with debootstrap + docker import.
ARG BASE_IMAGE=debian:trixie-slim
FROM ${BASE_IMAGE} AS deps
# Every image of this project carries this label: scripts prune dangling images by it (scripts/prepare.sh), and only them.
LABEL org.opencontainers.image.title=docker-distributed-llm
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1
# Debian's torch is a CPU build on amd64 and arm64 alike (PyPI's x86 torch drags in CUDA, GBs);
# OpenBLAS replaces the reference BLAS it would otherwise get: prefill is ~20x faster.
# libblis4-serial: BLIS's sgemv for one-thread float32 decode products (common/gemv.py); OpenBLAS keeps the
# libblas.so.3 alternative (higher priority), so torch's own BLAS is unchanged.
# python3-setuptools: torch declares it (pip's check says so otherwise).
# Like Debian's official slim image, and unlike a debootstrapped base: no docs, man pages or
# locales, and no downloaded .debs left in the layer (they were 450 MB of the dev image).
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/locale/*' > /etc/dpkg/dpkg.cfg.d/slim \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-setuptools python3-torch libopenblas0-openmp libblis4-serial python3-numpy python3-flask \
      python3-requests python3-docker python3-yaml python3-psutil python3-prometheus-client gunicorn \
      ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
# A venv over Debian's packages: pip adds what Debian lacks without touching apt's files.
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# wheels/ holds only a README for users who reach PyPI; scripts/prepare-wheels.sh fills it where a
# build can't. The bind mounts leave nothing behind in the layer.
RUN --mount=type=bind,source=wheels,target=/tmp/wheels \
    --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt \
    if ls /tmp/wheels/*.whl >/dev/null 2>&1; then PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels; export PIP_NO_INDEX PIP_FIND_LINKS; fi \
 && pip install -r /tmp/requirements.txt
# The services' user, with a home of its own for any cache a library writes. The folders of the
# named volumes the root writes (the synthetic model, the cluster secret) are made here owned by it:
# Docker seeds a new named volume from the image's folder, ownership included.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
 && mkdir -p /app /synthetic /run/cluster && chown app:app /synthetic /run/cluster
WORKDIR /app
# How torch's threads share a few cores with the cluster's other processes (README, "Compared with
# distributed-llama"). libgomp's threads spin 300,000 rounds after each parallel region by default:
# milliseconds in which they hold a core that the next process of the chain needs (1 worker x 2 threads,
# int4: 24 -> 32 tok/s at 30,000); much fewer and they fall asleep between the ops of one step (float32
# at 10,000: 10 tok/s, at 30,000: 13-14). THP_MEM_ALLOC_ENABLE: torch's allocator asks for 2 MB pages for
# large tensors (the weights, streamed every token: torch.mv on 2 threads 41 -> 48 GB/s here); a host
# whose transparent_hugepage is "never" ignores it. Both are read when a process starts: set them in
# the environment to change them.
ENV GOMP_SPINCOUNT=30000 \
    THP_MEM_ALLOC_ENABLE=1

# The test image. Debian's chromium-headless-shell is what Playwright itself runs headless (about
# 60 packages fewer than the full chromium); tests/browser reads CHROMIUM_PATH.
FROM deps AS dev
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      chromium-headless-shell docker-cli docker-compose python3-hypothesis python3-matplotlib \
      fonts-dejavu-core \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV CHROMIUM_PATH=/usr/bin/chromium-headless-shell
RUN --mount=type=bind,source=wheels,target=/tmp/wheels \
    --mount=type=bind,source=requirements-dev.txt,target=/tmp/requirements-dev.txt \
    if ls /tmp/wheels/*.whl >/dev/null 2>&1; then PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels; export PIP_NO_INDEX PIP_FIND_LINKS; fi \
 && pip install -r /tmp/requirements-dev.txt

# The service image: the dependencies plus the code, run as `app` (not root).
FROM deps AS runtime
COPY common ./common
COPY backend ./backend
COPY worker ./worker
COPY frontend ./frontend
COPY model_downloader ./model_downloader
COPY profiles ./profiles
USER app
