# Set-up and entry points. Every target creates or reuses the project's virtual environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench s3-server clean

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

# A throwaway SeaweedFS S3 server on 127.0.0.1 until Ctrl-C; prints the AWS_* exports. make s3-server BUCKET=name
s3-server: $(STAMP)
	$(PY) tests/s3server.py $(BUCKET)

clean:
	rm -rf $(VENV) out .pytest_cache
