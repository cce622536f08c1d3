# Two entry points do all set-up on a fresh machine (see README):
#   make run   -> bootstrap .venv, install, start the daemon with the bundled model and a demo call
#   make test  -> bootstrap .venv, install, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint format bootstrap system-deps install-service bench clean

bootstrap: $(STAMP)

# pip resolves torch from this machine's local wheel store (never a network torch wheel):
# pyproject only asks for torch>=2.9, which the local 2.14.1 build satisfies.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,encoder]'
	# the allow-list's speaker encoder (Resemblyzer ships its GE2E weights in the wheel);
	# --no-deps: its needs (librosa, scipy, torch, webrtcvad) are ours already, and its
	# metadata names the obsolete `typing` backport and the unmaintained webrtcvad sdist
	$(BIN)/pip install --quiet --no-deps 'resemblyzer>=0.1.4'
	touch $(STAMP)

run: bootstrap
	$(BIN)/streamguard demo

# ffmpeg, sox, espeak-ng, libportaudio2: installed with apt-get when missing (root or sudo).
system-deps:
	./scripts/system-deps.sh

test: system-deps bootstrap
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: system-deps bootstrap
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# ruff, then the layer contracts (pyproject.toml [tool.importlinter]; docs/architecture.md)
lint: bootstrap
	$(BIN)/ruff check streamguard training tests
	$(BIN)/ruff format --check streamguard training tests
	$(BIN)/lint-imports

format: bootstrap
	$(BIN)/ruff format streamguard training tests
	$(BIN)/ruff check --fix streamguard training tests

bench: bootstrap
	$(BIN)/streamguard bench

# Installs the systemd unit, user and config (see docs/operations.md); needs root.
install-service:
	$(if $(filter 0,$(shell id -u)),,sudo) ./systemd/install.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
