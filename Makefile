# Fresh-machine set-up and the project's two main commands:
#   make demo   installs everything and runs the main job on the embedded default
#   make test   installs everything and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed

.PHONY: install data demo test test-slow clean

install: $(STAMP) data

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

# Debian's Fashion-MNIST (the embedded default data), where apt-get exists.
data:
	@sh scripts/install_data.sh

demo: install
	$(BIN)/nas quickstart

test: install
	$(BIN)/python -m pytest -q -m "not slow" -n auto --dist loadfile --durations=15

test-slow: install
	$(BIN)/python -m pytest -q -m slow -n auto --dist loadfile

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
