# Every target makes its own virtual environment: a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench mutate clean golden-workbooks screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras, remade when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,lint,bench,mutate]'
	touch $@ $(VENV)/.installed

# The samples hold invalid rows on purpose, so batch-engage ends with exit code 1 (some rows
# failed): that is the expected outcome here, so only 2 or 3 make the target fail.
demo: $(VENV)/.installed
	@$(BIN)/batch-engage demo; status=$$?; \
	if [ $$status -eq 1 ]; then echo "(exit 1: some sample rows are invalid on purpose; see failed.csv)"; fi; \
	[ $$status -le 1 ]

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check batch_engage tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

# Mutation testing (mutmut) of the modules where a silent bug costs a double engagement, a
# lost row or a leaked token; writes docs/mutation.md. Not part of `make test`: run it before
# a change to those modules lands (README, "Mutation testing").
mutate: $(VENV)/.installed-dev
	rm -rf mutants
	@start=$$(date +%s); \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mutmut run --max-children $$(nproc) || exit $$?; \
	mkdir -p docs; $(BIN)/python tests/mutation/report.py $$(( $$(date +%s) - start )) > docs/mutation.md
	@grep -m1 'mutation score' docs/mutation.md

# PNGs of each step of the `batch-engage serve` page (docs/screenshots/NN-step.png), taken
# by the browser tests (tests/browser) in Debian's Chromium (`apt-get install chromium`).
screenshots: $(VENV)/.installed-dev
	BATCH_ENGAGE_SCREENSHOTS=docs/screenshots BATCH_ENGAGE_REQUIRE_BROWSER=1 \
		$(BIN)/python -m pytest tests/browser -m browser

# Rebuild tests/golden/workbooks/*.xlsx and, with LibreOffice on the PATH, their golden CSVs
# (what LibreOffice shows in each cell). Installs nothing: it needs the venv with the test
# extras (openpyxl; `make test` or `make lint` makes it) and, on Debian, LibreOffice from
# `apt-get install libreoffice-calc-nogui`. Review the CSV diff before committing it.
golden-workbooks:
	$(BIN)/python tests/golden/workbooks/make_workbooks.py

clean:
	rm -rf $(VENV) runs mutants .pytest_cache .mypy_cache .ruff_cache .hypothesis
