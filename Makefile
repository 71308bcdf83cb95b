# Set-up and entry points. Every target creates or reuses the project's virtual environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The page's browser test drives Debian's Chromium (Playwright's own browser download needs the internet).
CHROMIUM ?= /usr/bin/chromium
ARTIFACTS ?= out/test-artifacts

.PHONY: install test lint check chromium demo bench s3-server clean

# constraints.txt pins torch to the CPU wheel these machines carry, so no CUDA wheels are pulled.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) chromium
	VITMAE_TEST_ARTIFACTS=$(ARTIFACTS) CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q tests

# The formatter and linter's verdict on the whole tree; `ruff format . && ruff check --fix .` fixes most of it.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The fast loop before a commit: lint, then every test not marked slow (under 3 minutes on 2 cores).
check: lint
	$(PY) -m pytest -q -m "not slow" tests

# Installs Debian's chromium when it is missing and this is root (CI, fresh machines); else says how.
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for the browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "the browser test needs Chromium at $(CHROMIUM): sudo apt-get install chromium (or CHROMIUM=/path)" >&2; \
	  fi; }

demo: $(STAMP)
	$(PY) -m jobs.demo --workdir out/demo

bench: $(STAMP)
	$(PY) -m benchmarks.model_throughput

# A throwaway SeaweedFS S3 server on 127.0.0.1 until Ctrl-C; prints the AWS_* exports. make s3-server BUCKET=name
s3-server: $(STAMP)
	$(PY) tests/s3server.py $(BUCKET)

clean:
	rm -rf $(VENV) out .pytest_cache
