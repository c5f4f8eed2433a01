# poselift — two commands set up a fresh machine:
#   make run    set up .venv and run the main job on the embedded default (open benchmark, CPU-sized configs)
#   make test   set up .venv and run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# Where the Bandai-Namco mirror is; without one, `poselift prepare bandai` downloads from upstream.
export POSELIFT_BANDAI_MIRROR ?= $(abspath ../shared/data/bandai-namco)

.PHONY: run test venv clean
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -qq --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q

run: $(STAMP)
	$(BIN)/poselift prepare bandai --subset cpu --out data/bandai-cpu.h5
	$(BIN)/poselift info data/bandai-cpu.h5
	$(BIN)/poselift detect --prepared data/bandai-cpu.h5 --detector synthetic --out data/bandai-cpu.det-synthetic.h5
	$(BIN)/poselift baseline mean-pose --prepared data/bandai-cpu.h5 --out-dir results/bandai-cpu/mean-pose
	$(BIN)/poselift metrics --pred results/bandai-cpu/mean-pose/predictions.npz \
	    --gt results/bandai-cpu/mean-pose/targets.npz --actions results/bandai-cpu/mean-pose/actions.json \
	    --sequences results/bandai-cpu/mean-pose/sequences.json --out results/bandai-cpu/mean-pose/metrics.json

clean:
	rm -rf $(VENV) results
