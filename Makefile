# Set-up and entry points. Every target creates or reuses the project's virtual environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

# constraints.txt pins torch to the CPU wheel these machines carry, so no CUDA wheels are pulled.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m jobs.demo --workdir out/demo

bench: $(STAMP)
	$(PY) benchmarks/model_throughput.py

clean:
	rm -rf $(VENV) out .pytest_cache
