# Two commands do all set-up on a fresh machine:
#   make run    – the whole local stack (Redis, backend, worker, Label Studio, demo project)
#   make test   – the test suite (CI runs exactly this)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
EVALUATORS ?= .evaluators
EVAL_STAMP := $(EVALUATORS)/.installed-$(shell sha1sum < requirements-evaluators.txt | cut -c1-12)

.PHONY: install system-deps evaluators checkpoint run test test-loaded test-e2e test-slow bench check clean

# System tools (each apt package is named like its command). As root, whatever is missing is
# installed with apt-get (CI on a fresh machine); other users are told exactly what is missing.
# NEEDED: the stack and the test suite run a real redis-server.
# WANTED: ffmpeg writes the VP9 review videos and the green-screen mp4 (without it: OpenCV, no mp4);
#         docker-compose is only for tests/test_docker.py, which skips its compose checks without it.
NEEDED := redis-server
WANTED := ffmpeg docker-compose

system-deps:
	@missing() { for t in "$$@"; do command -v "$$t" >/dev/null || printf ' %s' "$$t"; done; }; \
	need=$$(missing $(NEEDED)); want=$$(missing $(WANTED)); \
	if [ -n "$$need$$want" ] && [ "$$(id -u)" = 0 ]; then \
	  echo "installing$$need$$want (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need $$want >/dev/null \
	    || { echo "error: apt-get could not install$$need$$want" >&2; exit 1; }; \
	  exit 0; \
	fi; \
	for t in $$want; do case $$t in \
	  ffmpeg) echo "note: ffmpeg is not installed: review videos are written with OpenCV and no green-screen mp4 is made (sudo apt-get install -y ffmpeg)";; \
	  docker-compose) echo "note: docker-compose is not installed: tests/test_docker.py skips its compose checks (sudo apt-get install -y docker-compose)";; \
	esac; done; \
	if [ -n "$$need" ]; then \
	  echo "error: missing$$need, which make needs; install with: sudo apt-get install -y$$need" >&2; exit 1; \
	fi

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation sam2==1.1.0
	rm -f $(VENV)/.installed-*; touch $@

install: system-deps $(STAMP)

# The field's evaluators (trackeval, vos-benchmark) for tests/test_evaluators.py, in their own
# virtualenv: their pins clash with ours (see requirements-evaluators.txt).
$(EVAL_STAMP): requirements-evaluators.txt
	test -x $(EVALUATORS)/bin/python || $(PY) -m venv $(EVALUATORS)
	$(EVALUATORS)/bin/pip install -q --no-deps -r requirements-evaluators.txt
	rm -f $(EVALUATORS)/.installed-*; touch $@

evaluators: $(EVAL_STAMP)

# The checkpoint is checked first, with the system Python: a missing one is said before minutes of
# installing (SAM2_CHECKPOINT=random for a smoke run with random weights).
checkpoint:
	@$(PY) scripts/check_checkpoint.py

run: checkpoint
	@$(MAKE) --no-print-directory install
	$(BIN)/python scripts/stack.py up

test: install evaluators
	$(BIN)/python -m pytest

# The fast suite 3 times in a row while one CPU hog per core keeps the machine busy, with each
# run's time printed: no test may lean on a wall-clock margin. Not part of CI (it takes a while).
test-loaded: install evaluators
	$(BIN)/python scripts/test_loaded.py --runs 3

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
	rm -rf $(VENV) $(EVALUATORS) .pytest_cache
