# The two commands of the quick start: `make demo` and `make test`.
# Each builds its own virtual environment from nothing on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test coverage lint typecheck unit clean asyncapi-parser chromium bench-es bench-relay \
	bench-relay-side bench-consumer bench-brokers bench-fast bench-sagas bench-saga-remote bench-projections \
	bench-takeover bench-partitions bench-observability

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The demo seals a customer's personal data with AES-GCM: it needs the crypto extra.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[crypto]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench,crypto]'
	touch $@

demo: $(VENV)/.installed-run
	$(BIN)/tidings demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# The suite alone: measuring coverage in every child process the CLI and crash tests start
# adds a fifth to its time. `make coverage` runs it measured, with the 90% floor.
# Two workers (pytest-xdist) run the tests side by side: most of the suite waits on servers
# and child processes, and every test has its own database, schema, stream or queue. The
# tests marked `outage` stop or freeze a server, so they run after, alone.
TEST_WORKERS ?= 2
test: lint typecheck asyncapi-parser chromium
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not outage"
	$(BIN)/pytest -m outage

coverage: $(VENV)/.installed-dev asyncapi-parser chromium
	$(BIN)/pytest --cov --cov-report=term

# The official AsyncAPI parser (npm), run by the machine's Node.js in the asyncapi tests.
ASYNCAPI := tools/asyncapi
asyncapi-parser: $(ASYNCAPI)/node_modules/.installed

$(ASYNCAPI)/node_modules/.installed: $(ASYNCAPI)/package.json $(ASYNCAPI)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: apt-get install -y nodejs npm" >&2; exit 1; }
	npm ci --prefix $(ASYNCAPI) --no-audit --no-fund --loglevel=error
	touch $@

# Debian's headless Chromium, driven by Playwright in the console's browser tests. Installed
# when missing and we are root; otherwise the tests say how (and fail under CI=true).
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else echo "chromium is missing: sudo apt-get install -y chromium (the browser tests skip)"; fi

# Side-by-side benchmarks (tidings, eventsourcing, the raw driver); needs PostgreSQL too.
bench-es: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/event_store.py $(BENCH_ARGS)

unit: $(VENV)/.installed-dev
	$(BIN)/pytest tests/unit -q

# Benchmarks (not tests): each needs the local PostgreSQL, RabbitMQ and NATS servers and
# prints Markdown tables; see README.md, "Performance".
bench-relay: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/relay.py $(ARGS)

# The relay's PostgreSQL -> NATS drain and nats-py's raw publish, round by round.
bench-relay-side: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/relay_side_by_side.py $(ARGS)

bench-consumer: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/consumer.py $(ARGS)

# A killed relay's lanes: time until a standby publishes, liveness locks against the lease.
bench-takeover: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/takeover.py $(ARGS)

# One stream's handling over 1, 2 and 3 `tidings consume --partitions` processes.
bench-partitions: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/partitions.py $(ARGS)

bench-brokers: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/raw_brokers.py $(ARGS)

# The cost of observability: a scrape of a 1,000,000-row outbox, the relay with metrics on.
bench-observability: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/observability.py $(ARGS)

# Instructions per call of the per-event fast paths, under valgrind's callgrind.
bench-fast: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/fastpaths.py

# Sagas of four local steps per second beside the raw commit limit (SQLite and PostgreSQL).
bench-sagas: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/sagas.py $(ARGS)

# Remote-step sagas over NATS: sagas/s, p50/p99, memory with 10,000 sagas waiting.
bench-saga-remote: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/saga_remote.py $(ARGS)

# Projections: catch-up beside eventsourcing's runner and a raw loop, live lag beside the
# raw floor, and a large catch-up's memory (SQLite and PostgreSQL).
bench-projections: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/projections.py $(ARGS)

clean:
	rm -rf $(VENV) $(ASYNCAPI)/node_modules .pytest_cache .mypy_cache .ruff_cache .coverage

# The cost of tracing on the relay and the consumer (off, API alone, SDK); needs the servers.
bench-tracing: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/tracing.py $(ARGS)
