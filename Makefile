VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test install install-dev lint typecheck protos bench clean

# plotly.js for the service page's charts: the official basic bundle (scatter and bar
# traces, 1.2 MB instead of the full 4.8 MB), pinned by package-lock.json and copied out
# of node_modules/; the dashboard serves it (dashboard/app/assets.py). Not in git.
PLOTLY_JS := dashboard/app/static/vendor/plotly.min.js
PLOTLY_BUNDLE := node_modules/plotly.js-basic-dist-min/plotly-basic.min.js

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	touch $@

$(PLOTLY_JS): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js and npm (Debian: sudo apt-get install nodejs npm), then run make again" >&2; exit 1; }
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	mkdir -p $(dir $@)
	cp $(PLOTLY_BUNDLE) $@

install: $(VENV)/.installed $(PLOTLY_JS)

install-dev: $(VENV)/.installed-dev $(PLOTLY_JS)

# make demo ENGINE=haproxy: the same scene with HAProxy carrying Ballast's calls.
ENGINE ?= embedded
demo: install
	$(PY) -m demo --engine $(ENGINE)

test: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

protos: install-dev
	$(PY) -m balancer.admin.generate

bench: install-dev
	$(PY) bench/proxy_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache node_modules $(PLOTLY_JS)
