# The Makefile owns the virtualenv. torch==2.13.0 (a local CPU wheel) is installed *first*:
# an unpinned or newer torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test race lint clean chromium

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The report's browser test needs Debian's chromium (CI runs as root).
chromium:
	@test -x /usr/bin/chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

test: $(STAMP) chromium
	$(PY) -m pytest -n 2 -q --durations=15

race: $(STAMP)
	$(VENV)/bin/descentlab race

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache  # the import contracts in pyproject.toml

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
