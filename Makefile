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

.PHONY: setup figures smoke test lab bench clean clean-data

setup: $(STAMP)

# Idempotent: the stamp is named after pyproject.toml's hash, so a second run does nothing
# and a changed dependency list reinstalls.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
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

test: $(STAMP)
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
