# Usage: make test [PYTEST_ARGS="-k ssh -x"] | make test-fast | make test-postgres |
#        make test-postgres-all | make lint | make docs | make docs-serve [DOCS_PORT=8100] |
#        make bench | make demo | make venv PYTHON=python3.12
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Only the folders that exist (example/ and bench/ come later).
LINT_PATHS := $(wildcard django_remote_submission tests example bench docs)

.PHONY: venv sysdeps test test-fast test-postgres test-postgres-all test-compat constraints lint \
	docs docs-serve bench demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: $(wildcard requirements*.txt) pyproject.toml setup.py constraints.txt
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c constraints.txt -r requirements_test.txt -r requirements_lint.txt
	touch $@

# Refresh constraints.txt: the newest releases that the lower bounds allow, for this Python.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install -q --upgrade pip
	.venv-constraints/bin/pip install -q -r requirements_test.txt -r requirements_lint.txt -r example/requirements.txt \
		-r requirements_docs.txt
	{ sed -n '1,2p' constraints.txt; .venv-constraints/bin/pip freeze --exclude-editable | \
		grep -v '^django-remote-submission'; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf .venv-constraints

# The core tests on another Python and Django, with the newest releases (no constraints):
#   make test-compat PYTHON=python3.10 DJANGO="Django>=4.2,<5.0"
#   make test-compat PYTHON=python3.13 DJANGO="Django>=5.2,<6.0"
DJANGO ?= Django
COMPAT_VENV = .venv-compat-$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
CORE_TESTS = tests/test_runner.py tests/test_logs.py tests/test_results.py tests/test_transports.py \
	tests/test_failures.py tests/test_auth.py tests/test_api.py tests/test_views.py \
	tests/test_consumers.py tests/test_keys.py
test-compat: sysdeps
	rm -rf $(COMPAT_VENV)
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install -q --upgrade pip
	$(COMPAT_VENV)/bin/pip install -q -r requirements_test.txt "$(DJANGO)"
	$(COMPAT_VENV)/bin/python -c 'import sys, django; print("compat:", sys.version.split()[0], "Django", django.__version__)'
	$(COMPAT_VENV)/bin/python -m pytest -q -m "not (browser or slow)" $(CORE_TESTS)

# Debian packages the tests and the docs need: sshd, redis-server, chromium, PostgreSQL,
# graphviz, Slurm (munge, slurmctld, slurmd, its client) and Grid Engine. Installed only when
# root.
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
SGE_PACKAGES := gridengine-master gridengine-exec gridengine-client
sysdeps:
	@missing=""; slurm=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	for p in $(SGE_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for p in $(SLURM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || slurm="$$slurm $$p"; done; \
	if [ -z "$$missing$$slurm" ]; then \
		echo "sysdeps: sshd, redis-server, chromium, PostgreSQL, graphviz, Slurm and Grid Engine present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "sysdeps: installing$$missing$$slurm"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && \
		{ [ -z "$$missing" ] || apt-get install -y -q $$missing; } && \
		{ [ -z "$$slurm" ] || apt-get install -y -q --no-install-recommends $$slurm; }; \
	else \
		echo "sysdeps: missing$$missing$$slurm (not root, not installing: tests needing them skip, or fail with CI=true)"; \
	fi

# The whole suite on SQLite, then the tests that matter to concurrency (marked postgres:
# locks, many workers, restarts, retention) again on a throwaway PostgreSQL cluster; the
# second run only when no PYTEST_ARGS narrow the first. make test-postgres-all runs every
# test on PostgreSQL (about as long as the SQLite run).
test: sysdeps venv
	$(PY) -m pytest $(PYTEST_ARGS)
	@[ -n "$(PYTEST_ARGS)" ] || $(MAKE) --no-print-directory test-postgres

# Database-level and unit tests only: no sshd, redis, worker or browser (well under a minute).
test-fast: venv
	$(PY) -m pytest -m "not (sshd or redis or worker or browser or slow or scheduler)" $(PYTEST_ARGS)

# On PostgreSQL: the tests that matter to concurrency (marked postgres), a few minutes ...
test-postgres: sysdeps venv
	DRS_TEST_DATABASE=postgres $(PY) -m pytest -m postgres $(PYTEST_ARGS)

# ... or every test that uses the suite's database.
test-postgres-all: sysdeps venv
	DRS_TEST_DATABASE=postgres $(PY) -m pytest -m "not own_project" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(PY) -m mypy

# The documentation site (docs/): warnings are errors, then every internal link is checked
# and the doctests run. Needs graphviz's dot (installed here when root).
DOCS_BUILD := docs/_build
DOCS_PORT ?= 8100
SPHINX = $(PY) -m sphinx -E -W --keep-going -q
docs: venv $(VENV)/.docs-installed
	@command -v dot >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz; }
	@command -v dot >/dev/null 2>&1 || { echo "make docs needs graphviz: apt-get install graphviz"; exit 1; }
	$(SPHINX) -b html docs $(DOCS_BUILD)/html
	$(PY) docs/checklinks.py $(DOCS_BUILD)/html
	$(SPHINX) -b doctest docs $(DOCS_BUILD)/doctest

$(VENV)/.docs-installed: requirements_docs.txt constraints.txt $(VENV)/.installed
	$(PY) -m pip install -c constraints.txt -r requirements_docs.txt
	touch $@

# Build, then serve the site on http://127.0.0.1:$(DOCS_PORT)/ until Ctrl-C.
docs-serve: docs
	@echo "The documentation: http://127.0.0.1:$(DOCS_PORT)/ (Ctrl-C stops)"
	$(PY) -m http.server --bind 127.0.0.1 --directory $(DOCS_BUILD)/html $(DOCS_PORT)

bench: venv
	$(PY) -m bench

# Ctrl-C stops everything the demo started. PORT=8001 make demo for another port.
demo: venv
	@[ $(VENV)/.demo-installed -nt example/requirements.txt ] || \
		{ $(PY) -m pip install -q -r example/requirements.txt && touch $(VENV)/.demo-installed; }
	$(PY) example/demo.py

clean:
	rm -rf $(VENV) .venv-compat-* build dist *.egg-info .pytest_cache .ruff_cache $(DOCS_BUILD)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
