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
bench: $(STAMP) $(NUMBA_STAMP) pigz
	$(PY) -m benchmarks.run

# End-to-end `dcas compress/decompress` of a 1 GB file and a pipe vs pigz (several minutes). Pass
# E2E_ARGS, e.g. E2E_ARGS="--sizes 1,4" for the 4 GB memory check, "--beam" for the pipeline's cost
# per GB beyond start-up (1 and 4 GB, ~15 more minutes).
bench-e2e: $(STAMP) $(NUMBA_STAMP) pigz
	$(PY) -m benchmarks.e2e $(E2E_ARGS)

# The HTTP services on the local stack: 8 concurrent 100 MB uploads (Manager RSS, throughput vs a plain
# resumable upload), GET /v1/jobs/{id} latency at 200 requests/s, last byte -> SUCCEEDED (several minutes).
bench-http: $(STAMP) $(NUMBA_STAMP)
	$(PY) -m benchmarks.http $(HTTP_ARGS)

clean:
	rm -rf $(VENV) demo benchmarks/out benchmarks/corpora

# --- The image: one Dockerfile for the Dataflow launcher and workers and the HTTP services (docs/operations.md) ---
IMAGE ?= dcas:dev
STANDIN_BASE ?= dcas-standin-base:bookworm
# BuildKit is needed (the pip CA goes in as a secret): the docker on PATH if it has buildx, else Debian's own client.
DOCKER ?= $(shell docker buildx version >/dev/null 2>&1 && echo docker || (test -x /usr/bin/docker && echo /usr/bin/docker) || echo docker)
# pip inside the build trusts what pip here trusts (PIP_CERT) and uses the same index (PIP_INDEX_URL), if set.
comma := ,
IMAGE_PIP_ARGS := $(if $(PIP_CERT),--secret id=pip_cert$(comma)src=$(PIP_CERT)) $(if $(PIP_INDEX_URL),--build-arg PIP_INDEX_URL)

.PHONY: lint image image-standin image-local test-image test-image-run
lint: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile

# On the real, pinned bases (needs a registry). IMAGE_ARGS adds build arguments, e.g. --build-arg PIPELINE=streaming.
image:
	DOCKER_BUILDKIT=1 $(DOCKER) build $(IMAGE_PIP_ARGS) $(IMAGE_ARGS) -t $(IMAGE) .

# Where nothing can be pulled: a debootstrap stand-in for both bases (stubs for Beam's boot and Google's launcher).
image-standin:
	$(DOCKER) image inspect $(STANDIN_BASE) >/dev/null 2>&1 || DOCKER=$(DOCKER) deploy/image/standin-base.sh $(STANDIN_BASE)

image-local: image-standin
	$(MAKE) image IMAGE_ARGS="--build-arg BASE_IMAGE=$(STANDIN_BASE) --build-arg LAUNCHER_IMAGE=$(STANDIN_BASE) $(IMAGE_ARGS)"

# Runs the image's entry points (tests/image): a job round trip inside the container, the roles, the user, pip check.
# test-image builds on the stand-in first; test-image-run checks whatever $(IMAGE) is (CI: built on the real bases).
test-image: image-local
	$(MAKE) test-image-run

test-image-run: $(STAMP)
	DCAS_IMAGE=$(IMAGE) DOCKER=$(DOCKER) $(PY) -m pytest -q tests/image

# The architecture diagram: docs/architecture.dot -> docs/architecture.svg (Graphviz, Debian's `graphviz`).
.PHONY: docs-diagram
docs-diagram:
	command -v dot >/dev/null || (apt-get update && apt-get install -y graphviz)
	dot -Tsvg docs/architecture.dot -o docs/architecture.svg
