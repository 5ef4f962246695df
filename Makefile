# The two commands of the README: `make run` and `make test` (and `make docs`, the site under docs/). Everything else is set up on the way.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
TEST_PROCESSES ?= 3

.PHONY: install localdb browser run test soak bench lint docs lock clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	@# compat: the checkout itself on sys.path, so ansible finds ansible_collections/ in it (the collection)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e . --config-settings editable_mode=compat
	touch $@

install: $(STAMP) var/log

# supervisord.conf writes its logs and its socket under var/; supervisord creates no directories.
var/log:
	mkdir -p $@

# Builds the embedded database (FerretDB, Go) once per source version.
localdb: install
	$(BIN)/python -c "from resource_manager.localdb import build; build()"

# The browser tests drive Debian's chromium (never a browser download); install it if missing.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make test needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

run: localdb
	$(BIN)/python resource_manager/server.py --dev-account

# Each run gets a temp root of its own: pytest makes /tmp/pytest-of-<user> private again at every
# session start, which would take the embedded PostgreSQL's user out of a concurrent run's directories.
# TEST_PROCESSES: the tests run in this many processes (pytest-xdist), each with its own embedded
# database and servers; most of a test's time is spent waiting on servers, so 3 fill 2 cores
# (6 min 07 s with 2, measured on a fresh clone; see RELIABILITY.md).
test: localdb browser
	@tmp=$$(mktemp -d /tmp/rm-tests-XXXXXX); \
	PYTEST_DEBUG_TEMPROOT=$$tmp $(BIN)/python -m pytest -n $(TEST_PROCESSES) $(PYTEST_ARGS); status=$$?; rm -rf $$tmp; exit $$status

# Long fault-injection rounds (tests marked `slow`), deselected by `make test`.
soak: localdb
	@tmp=$$(mktemp -d /tmp/rm-tests-XXXXXX); \
	PYTEST_DEBUG_TEMPROOT=$$tmp $(BIN)/python -m pytest -m slow $(PYTEST_ARGS); status=$$?; rm -rf $$tmp; exit $$status

# Benchmarks of the deployed service (gunicorn) with baselines from the same run; writes BENCHMARKS.md.
bench: localdb
	$(BIN)/python -m bench $(BENCH_ARGS)

# ruff, the import contracts of pyproject.toml (the layers import one way, see docs/development.md),
# and mypy --strict on the client library, which ships typed (py.typed).
lint: install
	$(BIN)/python -m ruff check resource_manager ansible_collections tests docgen $(wildcard bench)
	$(BIN)/lint-imports
	$(BIN)/mypy --strict resource_manager/clientlib

# The documentation site (mkdocs.yml, docs/) into site/: first the reference parts generated from the code
# (python -m docgen; under CI only checked: a stale page fails), then a strict build (a broken link or anchor
# fails it). Offline: nothing is fetched.
docs: install
	$(BIN)/python -m docgen $(if $(CI),--check)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "docs: built into site/ (open site/index.html, or .venv/bin/mkdocs serve -a 127.0.0.1:8001)"

# Regenerates the pins from pyproject.toml (the one declaration), keeping every pin that still fits.
# UPGRADE=1 moves every package to its newest version allowed.
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra server --extra localdb -o requirements.txt --custom-compile-command "make lock" \
	  --python-version 3.11 --quiet $(if $(UPGRADE),--upgrade)
	$(BIN)/uv pip compile pyproject.toml --extra server --extra localdb --extra dev -c requirements.txt -o requirements-dev.txt \
	  --custom-compile-command "make lock" --python-version 3.11 --quiet $(if $(UPGRADE),--upgrade)

clean:
	rm -rf $(VENV) resource_manager/localdb/.build .pytest_cache artifacts site
