# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Each creates or updates .venv at the repository root by itself.
#
# torch: the CPU build is installed first (TORCH_SPEC), because an unpinned `torch` pulls a
# multi-GB CUDA build. On a GPU machine run `make demo TORCH_SPEC=torch` (or install a CUDA
# torch into .venv first): an existing torch is never replaced.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: venv
	$(BIN)/workbench demo

test: venv
	$(BIN)/ruff check workbench tests benchmarks
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) data/cache
