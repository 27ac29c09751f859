# Development commands (the tools come with `pip install -e ".[dev]"`).
PYTHON ?= python
BENCH_ARGS ?=

.PHONY: lint test bench docs

lint:
	ruff check structops tests examples benchmarks
	$(PYTHON) -m mypy structops

test:
	pytest

bench:
	@set -e; for script in benchmarks/bench_*.py; do \
		echo "== $$script"; $(PYTHON) $$script $(BENCH_ARGS); \
	done

docs:
	sphinx-build -n -W -b html docs docs/_build/html
