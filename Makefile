# DCaS: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo up test test-fast bench bench-e2e bench-http pigz chromium screenshots clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Numba's on-disk cache is keyed on each function's own file, but the kernels inline functions
# from other codec modules: after any codec change, drop the cache so nothing stale runs.
NUMBA_STAMP := $(VENV)/.numba-codec
$(NUMBA_STAMP): $(STAMP) $(wildcard codec/*.py)
	rm -f codec/__pycache__/*.nbi codec/__pycache__/*.nbc
	touch $@

demo: $(STAMP) $(NUMBA_STAMP)
	$(PY) -m benchmarks.demo

# The web page's tests drive Debian's chromium through chromedriver. Installed here when missing (CI
# starts on a fresh machine); if apt-get cannot (not root, no network) the browser tests skip and say why.
chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "make: could not install chromium and chromium-driver; the browser tests will skip" >&2; \
	fi

# The local stack (emulators, streaming pipeline, reconciler, Manager) until Ctrl-C; prints the web
# page's URL and a demo key, and the export lines for `dcas` in another shell.
up: $(STAMP) $(NUMBA_STAMP)
	$(VENV)/bin/dcas stack up

# Every test level, emulators included: tests/conftest.py starts the emulators a test needs.
test: $(STAMP) $(NUMBA_STAMP) chromium
	$(PY) -m pytest -q tests

# The web page's screenshots in docs/screenshots, taken by its browser tests (on the fakes and on the stack).
screenshots: $(STAMP) $(NUMBA_STAMP) chromium
	DCAS_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/e2e/test_web_page.py tests/e2e/test_http_flow.py

# The inner loop: pure functions and fakes of the ports, no emulator, well under a minute.
test-fast: $(STAMP) $(NUMBA_STAMP)
	$(PY) -m pytest -q tests/unit

# pigz is Debian's; both benchmarks install it, so the man-page corpus (which includes pigz.1) is the
# same whichever ran first.
pigz:
	command -v pigz >/dev/null || (apt-get update && apt-get install -y pigz)

# Codec benchmark (single thread, ~2 min): rewrites its table in docs/benchmarks.md.
bench: $(STAMP) pigz
	$(PY) -m benchmarks.run

# End-to-end `dcas compress/decompress` of a 1 GB file vs pigz (several minutes). Pass E2E_ARGS,
# e.g. E2E_ARGS="--sizes 1,4" for the 4 GB memory check.
bench-e2e: $(STAMP) pigz
	$(PY) -m benchmarks.e2e $(E2E_ARGS)

# The HTTP services on the local stack: 8 concurrent 100 MB uploads (Manager RSS, throughput vs a plain
# resumable upload), GET /v1/jobs/{id} latency at 200 requests/s, last byte -> SUCCEEDED (several minutes).
bench-http: $(STAMP) $(NUMBA_STAMP)
	$(PY) -m benchmarks.http $(HTTP_ARGS)

clean:
	rm -rf $(VENV) demo benchmarks/out benchmarks/corpora
