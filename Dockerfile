# The sentiment service: python -m app listening on 0.0.0.0:8000, as one uvicorn process per CPU the container may
# use, each with its own model copy and batch queue (SENTIMENT_PROCESSES=auto; README, "Scaling out").
#
#   docker build -t imdb-sentiment .                                      # CPU torch from download.pytorch.org
#   make wheels && docker build -t imdb-sentiment .                       # offline: only wheels/ is used
#   docker build --build-arg TORCH_VARIANT=cuda -t imdb-sentiment:cuda .  # CUDA torch (offline: make wheels
#                                                                         # TORCH_VARIANT=cuda first)
#
# BASE_IMAGE may be python:3.11-slim (python in /usr/local/bin) or a plain Debian bookworm with Debian's python3.11
# and python3-venv (/usr/bin): the deps stage makes a venv with whichever python3 the base has, and the runtime
# stage, built from the same base, copies that venv. The shipped model artifact (model/artifacts/imdb-lstm-v3) must
# be in the build context; the build loads it once and fails if it is missing or corrupt.
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: a venv with the dependencies only; it changes when pyproject.toml or wheels/ do.
FROM ${BASE_IMAGE} AS deps
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
# CUDA build of torch used when TORCH_VARIANT=cuda and no wheels/ folder is in the context.
ARG TORCH_CUDA_INDEX=cu126
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# `wheels*` matches nothing when there is no wheels/ folder, and COPY needs at least one source: hence pyproject.toml
# (which is needed anyway). When wheels/ is there its files land in /wheels next to it and pip never goes online.
COPY pyproject.toml wheels* /wheels/
# Dependencies first, from pyproject.toml alone, so editing the code does not reinstall torch.
RUN python -c "import tomllib; project = tomllib.load(open('/wheels/pyproject.toml', 'rb'))['project']; \
                  print('\n'.join(project['dependencies']))" > /tmp/requirements.txt \
    && case "$TORCH_VARIANT" in \
         cpu) torch_index=cpu ;; \
         cuda) torch_index="$TORCH_CUDA_INDEX" ;; \
         *) echo "TORCH_VARIANT must be cpu or cuda, not '$TORCH_VARIANT'" >&2; exit 1 ;; \
       esac \
    && if [ -n "$(find /wheels -maxdepth 1 -name '*.whl' -print -quit)" ]; then \
         echo "installing from wheels/ only (offline)"; \
         pip install --no-cache-dir --no-index --find-links /wheels -r /tmp/requirements.txt; \
       else \
         pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/$torch_index" \
             "torch==$TORCH_VERSION" \
         && pip install --no-cache-dir -r /tmp/requirements.txt; \
       fi \
    && built="$(python -c 'import torch; print("cpu" if torch.version.cuda is None else "cuda")')" \
    && if [ "$built" != "$TORCH_VARIANT" ]; then \
         echo "TORCH_VARIANT=$TORCH_VARIANT but the torch installed is a $built build:" \
              "run make wheels TORCH_VARIANT=$TORCH_VARIANT, or build without wheels/" >&2; \
         exit 1; \
       fi \
    && torch_dir="$(python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
    && rm -rf "$torch_dir/test" "$torch_dir/include" \
              "$torch_dir"/bin/test_* "$torch_dir"/bin/*Test "$torch_dir"/bin/protoc*
# Trimmed above (~190 MB): torch's C++ test binaries, protoc and C++ headers; inference needs none of them (headers
# only matter for compiling extensions or torch.compile, which the service does not use).

# Stage 2: the project (app, model and the artifact as package data) in its own folder, so a code or model change
# makes a layer of a few MB instead of a new copy of the whole venv.
FROM deps AS project
COPY pyproject.toml README.md ./
COPY app/ app/
COPY model/ model/
# --no-deps: everything is installed above. Building needs setuptools, from wheels/ when it is there. Then load the
# installed artifact once (-P: the installed package, not /src) so a missing or corrupt model fails the build.
RUN if [ -n "$(find /wheels -maxdepth 1 -name '*.whl' -print -quit)" ]; then \
         set -- --no-index --find-links /wheels; \
       fi \
    && pip install --no-cache-dir --no-deps --target /opt/project "$@" . \
    && PYTHONPATH=/opt/project python -P -c \
       "from model import load_model; print('model artifact:', load_model(device='cpu').card()['version'])"


FROM ${BASE_IMAGE} AS runtime
ARG UID=10001
LABEL org.opencontainers.image.title="imdb-sentiment" \
      org.opencontainers.image.description="Movie-review sentiment over HTTP: a PyTorch LSTM behind a batching server"
RUN groupadd --gid "$UID" sentiment \
    && useradd --uid "$UID" --gid sentiment --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sentiment
# jemalloc instead of glibc's malloc: under steady load glibc's arenas kept the resident set creeping up (3-16% in
# ten minutes), jemalloc's stayed flat (docs/reliability.md, soak). Linked at a fixed path for every architecture.
# MALLOC_CONF below is app/memory.py's JEMALLOC_CONF: without it jemalloc gave large tensors back to the OS after every
# forward pass, and faulting them in again cost about 12% of the throughput at 64 connections.
# Not version-pinned (DL3008): the package comes from whichever Debian release BASE_IMAGE is built on.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/* \
    && find /usr/lib -name libjemalloc.so.2 -exec ln -s {} /usr/local/lib/libjemalloc.so.2 \; \
    && test -e /usr/local/lib/libjemalloc.so.2
COPY --from=deps /opt/venv /opt/venv
COPY --from=project /opt/project /opt/project
# HOME and TMPDIR point at /tmp, the one writable place when the root filesystem is read-only (compose, k8s).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/project \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    HOME=/tmp \
    TMPDIR=/tmp \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    MALLOC_CONF=oversize_threshold:0
WORKDIR /srv
USER ${UID}:${UID}
EXPOSE 8000
# python, not curl: the slim image has no curl. 200 only once the model is loaded and warmed up.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; \
sys.exit(u.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status != 200)"]
# Not uvicorn's own worker processes: `python -m app` supervises its own (SENTIMENT_PROCESSES), so that readiness,
# /metrics and SIGTERM cover them all. Settings come only from SENTIMENT_* environment variables.
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]
