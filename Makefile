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
JS_PACKAGES := requirejs@2.3.6 d3@5.7.0 jquery@2.1.0

.PHONY: venv demo test chromium slurm lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@# bertviz's JavaScript (require.js, d3 5, jQuery 2) from the npm registry, for offline views.
	@command -v npm >/dev/null || { echo "npm not found: install Node.js/npm (apt-get install npm) for offline bertviz views"; exit 1; }
	npm install --silent --no-save --no-package-lock --no-audit --no-fund --prefix $(VENV)/js $(JS_PACKAGES)
	touch $(STAMP)

demo: venv
	$(BIN)/workbench demo

# The unit tests and every notebook on its small defaults (nbval), in one pytest run.
# chromium first: when it is missing and cannot be installed, stop before minutes of set-up.
# slurm: Debian's SLURM and munge for tests/report/test_slurm.py (which start a single-node SLURM as root).
test: chromium slurm venv
	$(BIN)/ruff check workbench tests benchmarks notebooks
	$(BIN)/python -m pytest -q tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg

# tests/test_browser.py needs Debian's chromium: installed when missing (root or sudo), else
# stop with the command to run.
chromium:
	@bash .ci/ensure-chromium

# tests/report/test_slurm.py needs Debian's slurmctld, slurmd, slurm-client and munge: installed when
# missing (root or sudo), else a note, and those tests skip with the reason.
slurm:
	@bash .ci/ensure-slurm

bench: venv
	$(BIN)/python benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) data/cache
