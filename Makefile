# Everything runs from the project's own virtualenv (.venv), created on demand.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PROTOS := $(wildcard protos/recsys/v1/*.proto)
STUBS  := $(patsubst protos/%.proto,%_pb2.py,$(PROTOS))
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install stubs sysdeps demo test lint bench fuzz clean

install: $(VENV)/.installed stubs

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,tune]'
	@touch $@

# gRPC stubs are generated from protos/ (never committed) into the recsys.v1 package.
stubs: $(VENV)/.installed $(STUBS)

recsys/v1/%_pb2.py: protos/recsys/v1/%.proto $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $<
	@touch recsys/v1/__init__.py

# System packages the tests use: redis-server (Redis backend tests), promtool and amtool (alert tests).
sysdeps:
	@if ! command -v redis-server >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq redis-server prometheus prometheus-alertmanager >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq redis-server prometheus prometheus-alertmanager >/dev/null)); \
	  else echo "note: redis-server not found and cannot install it; Redis tests will be skipped"; fi; \
	fi

demo: install
	$(VENV)/bin/recsys demo

# The tests also cover the optional NCF model, so they install its extra (PyTorch's CPU build, pinned
# torch==2.13.0; `make install`, `make demo` and the serving image never need it).
$(VENV)/.installed-ncf: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[ncf]'
	@touch $@

test: install $(VENV)/.installed-ncf sysdeps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q --durations=20

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The bench's peer composes the same stages with Ray Serve: the bench extra (ray[serve], pinned with ray).
# Catalog sizes: ITEMS=10000 or ITEMS=1000000 (docs/bench.md gives the matching --users/--interactions).
ITEMS ?= 100000
BENCH_ARGS ?=

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	@touch $@

bench: install $(VENV)/.installed-bench
	$(VENV)/bin/recsys bench --items $(ITEMS) --json bench.json $(BENCH_ARGS)

# Coverage-guided fuzzing (atheris) of every parser for FUZZ_SECONDS each; corpus and crashes in .fuzz/.
FUZZ_SECONDS ?= 60

fuzz: install
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install --quiet -e '.[fuzz]'
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) recsys/v1 .pytest_cache build *.egg-info bundles
