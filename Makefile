# poselift — two commands set up a fresh machine:
#   make run    set up .venv and run the main job on the embedded default (open benchmark, CPU-sized configs)
#   make test   set up .venv and run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# Where the Bandai-Namco mirror is; without one, `poselift prepare bandai` downloads from upstream.
# OpenMP threads wait passively: spinning threads slow torch down badly when jobs share the 2 cores.
export OMP_WAIT_POLICY ?= PASSIVE
export POSELIFT_BANDAI_MIRROR ?= $(abspath ../shared/data/bandai-namco)
# Where the MakeHuman CC0 body assets are (the rendered benchmark); without them, `poselift render` downloads
# the pinned upstream files and checks them against the shipped manifest.
export POSELIFT_MAKEHUMAN_ASSETS ?= $(abspath ../shared/data/makehuman)

.PHONY: run test bench venv bytecode clean mlflow-ui
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -qq --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

# poselift's own modules byte-compiled: the editable install leaves them to the first import, and where
# PYTHONDONTWRITEBYTECODE is set every process (each workflow job, each CLI call of the tests) compiles them
# again. Only files changed since are recompiled.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src

# The suite in two (up to four) worker processes, each test file on one worker: much of it waits on
# subprocesses (Snakemake, Slurm, DVC, an MLflow server), and each test runs torch on one thread.
test: bytecode
	$(BIN)/python -m pytest -q --numprocesses auto --maxprocesses 4 --dist loadfile

# The workflow (Snakefile) on the embedded default: every experiment of params.yaml whose data can be made
# here (the open benchmark's, CPU-sized; the Human3.6M ones need their sources set), on this machine's CPU,
# then the self-contained HTML report. Snakemake's jobs call `poselift`, hence the venv first on PATH.
run: bytecode
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --profile workflow/profiles/local all
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --report reports/report.html
	$(BIN)/poselift info data/prepared/bandai-cpu.h5
	cat reports/results.md
	@echo "contact sheet of the rendered benchmark: reports/crops-bandai-cpu-img.png"

# Browse the MLflow runs of every train and evaluate job (default store: ./mlflow.db) at http://127.0.0.1:5000
MLFLOW_STORE ?= sqlite:///mlflow.db
MLFLOW_PORT ?= 5000
mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_STORE) --host 127.0.0.1 --port $(MLFLOW_PORT)

# The longer bench target (params.yaml `bench`: ablations with seeds, Table V, Lifting-by-Image sweeps), about
# 105 minutes on 2 cores from a fresh clone (measured); it includes `all`. Its tables: reports/bench/bench.md and .html.
bench: bytecode
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --profile workflow/profiles/local bench
	cat reports/bench/bench.md

clean:
	rm -rf $(VENV) results
