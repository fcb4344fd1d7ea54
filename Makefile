# Two commands on a fresh machine:  `make demo`  and  `make test`.
PY    ?= python3
VENV  ?= .venv
BIN   := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install demo test bench clean

install: $(VENV)/.installed

# torch first, pinned, so that no other torch (CUDA) is pulled in by a dependency.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m streamvid.describe.weights
	touch $@

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/streamvid demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) build *.egg-info
