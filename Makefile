# DCaS: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench bench-e2e pigz clean

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

# Every test level, emulators included: tests/conftest.py starts fake-gcs-server when a test needs it.
test: $(STAMP) $(NUMBA_STAMP)
	$(PY) -m pytest -q tests

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
bench-e2e: $(STAMP) pigz
	$(PY) -m benchmarks.e2e $(E2E_ARGS)

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
