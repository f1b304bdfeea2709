# Two commands do all set-up on a fresh machine:
#   make run    – the whole local stack (Redis, backend, worker, Label Studio, demo project)
#   make test   – the test suite (CI runs exactly this)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)

.PHONY: install system-deps run test test-e2e test-slow bench check clean

system-deps:
	@command -v redis-server >/dev/null && command -v ffmpeg >/dev/null && command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server ffmpeg docker-compose >/dev/null; \
	  else echo "please install redis-server and ffmpeg (apt-get install redis-server ffmpeg)"; exit 1; fi; }

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation sam2==1.1.0
	rm -f $(VENV)/.installed-*; touch $@

install: system-deps $(STAMP)

run: install
	$(BIN)/python scripts/stack.py up

test: install
	$(BIN)/python -m pytest

test-e2e: install
	bash scripts/install_label_studio.sh
	$(BIN)/pip install -q playwright==1.65.2
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq chromium >/dev/null; } || echo "install chromium for the browser tests"
	$(BIN)/python -m pytest -m "e2e or browser" -o addopts="-ra" tests/e2e

test-slow: install
	$(BIN)/python -m pytest -m slow -o addopts="-ra"

bench: install
	$(BIN)/python scripts/bench_interactive.py

check: install
	bash scripts/check

clean:
	rm -rf $(VENV) .pytest_cache
