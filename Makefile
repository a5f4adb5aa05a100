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

.PHONY: install serve test train tune evaluate bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/python -m app --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

train: $(STAMP)
	$(BIN)/python -m model.train --data $(DATA) $(TRAIN_ARGS)

tune: $(STAMP)
	$(BIN)/python -m model.tune --data $(DATA) $(TUNE_ARGS)

evaluate: $(STAMP)
	$(BIN)/python -m model.evaluate --artifact model/artifacts/imdb-lstm-v1 --data $(DATA)

clean:
	rm -rf $(VENV) .pytest_cache runs
