# The README's commands. A fresh clone needs nothing but python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
DATA ?= ../shared/data/aclImdb_v1.tar.gz
TORCH_VERSION ?= 2.13.0
# CPU build of torch by default. Machines whose pip already finds the CPU wheel (like ours) need no index;
# elsewhere set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu, or .../whl/cu126 for CUDA (see README).
TORCH_INDEX_URL ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test train evaluate bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# jemalloc when installed (apt-get install libjemalloc2): with glibc's malloc the server's memory creeps up under
# steady load (README, "Memory"). The same places as app/memory.py's JEMALLOC_PATHS.
# MALLOC_CONF is app/memory.py's JEMALLOC_CONF (why: its docstring).
JEMALLOC ?= $(firstword $(wildcard /usr/local/lib/libjemalloc.so.2 /usr/lib/*/libjemalloc.so.2 /usr/lib/libjemalloc.so.2))
MALLOC_CONF ?= oversize_threshold:0

serve: $(STAMP)
	$(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC) MALLOC_CONF=$(MALLOC_CONF) )$(BIN)/python -m app --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

train: $(STAMP)
	$(BIN)/python -m model.train --data $(DATA) $(TRAIN_ARGS)

evaluate: $(STAMP)
	$(BIN)/python -m model.evaluate --artifact model/artifacts/imdb-lstm-v3 --data $(DATA) $(EVALUATE_ARGS)

# Needs wrk (apt-get install -y wrk) and a quiet machine; writes docs/benchmarks.md and bench/results/.
bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python -m bench.run --data $(DATA) --report docs/benchmarks.md $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache runs

# --- Docker (README, "Docker") ---------------------------------------------------------------------------------------
# wheels/: every wheel the image needs (Linux x86_64, CPython 3.11), so `docker build` installs with --no-index.
# TORCH_VARIANT=cuda downloads CUDA torch from TORCH_CUDA_INDEX_URL; cpu uses TORCH_INDEX_URL like `make install`.
TORCH_VARIANT ?= cpu
TORCH_CUDA_INDEX_URL ?= https://download.pytorch.org/whl/cu126
IMAGE ?= imdb-sentiment:1.0.0$(if $(filter cuda,$(TORCH_VARIANT)),-cuda)
WHEELS_TORCH_INDEX = $(if $(filter cuda,$(TORCH_VARIANT)),$(TORCH_CUDA_INDEX_URL),$(TORCH_INDEX_URL))
WHEELS_TARGET = --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
	--platform manylinux2014_x86_64 $(foreach v,$(shell seq 17 36),--platform manylinux_2_$(v)_x86_64)

.PHONY: wheels docker-build docker-test

wheels:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -f wheels/torch-*.whl
	$(BIN)/pip download --quiet --disable-pip-version-check --dest wheels $(WHEELS_TARGET) "torch==$(TORCH_VERSION)" \
		$(if $(WHEELS_TORCH_INDEX),--index-url $(WHEELS_TORCH_INDEX))
	$(BIN)/python -c "import re, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
		print('\n'.join(d for d in deps if re.match(r'[\w.-]+', d)[0].lower() != 'torch'))" \
		| $(BIN)/pip download --quiet --disable-pip-version-check --dest wheels $(WHEELS_TARGET) \
			-r /dev/stdin "setuptools>=68" wheel

# BuildKit where the docker CLI has buildx, the legacy builder otherwise (our CI machines' CLI has no buildx).
docker-build:
	DOCKER_BUILDKIT=$${DOCKER_BUILDKIT:-$$(docker buildx version > /dev/null 2>&1 && echo 1 || echo 0)} \
		docker build --build-arg TORCH_VARIANT=$(TORCH_VARIANT) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
		-t $(IMAGE) .

docker-test:
	bash scripts/docker_smoke.sh
