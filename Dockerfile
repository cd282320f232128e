# DCaS: one image for every role (deploy/image/dcas-role lists them; docs/operations.md, "The image"):
#   - the Beam SDK worker of Dataflow jobs (custom container; ENTRYPOINT /opt/apache/beam/boot, as Dataflow requires),
#   - the Dataflow flex-template launcher (Dataflow runs /opt/google/dataflow/python_template_launcher itself),
#   - the Manager and Status HTTP services (`dcas-role manager|status`, as the manifests in deploy/ say).
# The codec and every dependency are installed and the numba kernels compiled at build, so no worker or service
# compiles or installs anything when it starts.
#
# Build (BuildKit, for the pip CA secret):
#   DOCKER_BUILDKIT=1 docker build -t IMAGE [--secret id=pip_cert,src="$PIP_CERT"] .
# Without registry access, `make image-local` builds it on a debootstrap stand-in base (deploy/image/standin-base.sh).
# No `# syntax=` line on purpose: it would pull a frontend image; the frontend built into Docker >= 20.10 suffices.

# Pinned to exact tags. The Beam SDK tag must match BEAM_VERSION and setup.py (tests/unit/test_image_files.py).
# The launcher tag is the one Google's Python flex-template samples use; newer dated tags are listed on Google's
# "Flex Templates base images" page; only the launcher binary is taken from it.
ARG BASE_IMAGE=apache/beam_python3.11_sdk:2.77.0
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:20230622_RC00

FROM ${LAUNCHER_IMAGE} AS launcher

FROM ${BASE_IMAGE}
ARG BEAM_VERSION=2.77.0
# The services' user. Dataflow runs the worker as the image's user too; if workers need root, build their tag with
# --build-arg RUNTIME_UID=0 (docs/troubleshooting.md).
ARG RUNTIME_UID=10001
# Optional: an index other than PyPI (a mirror). The CA bundle goes in as the secret `pip_cert`, never a layer.
ARG PIP_INDEX_URL

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

# RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT: the boot binary would otherwise make a fresh venv at every worker start;
# ours (on PATH) is the environment. NUMBA_CPU_NAME=generic: the cache compiled here is keyed on the CPU, and
# generic x86-64 code is valid on every worker type (measured here: within the noise of host-tuned code, see
# docs/architecture.md). The cache dir is ours and writable by the runtime user: numba skips an unwritable one.
# DCAS_TRACE_EXPORTER=gcp: spans go to Cloud Trace wherever the image runs with Google credentials (Dataflow
# workers see only the image's environment); without credentials tracing is off after one warning
# (adapters/tracing.py). A deployment may still set it to none, console or file.
ENV VIRTUAL_ENV=/opt/dcas/venv \
    PATH=/opt/dcas/venv/bin:$PATH \
    RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1 \
    NUMBA_CACHE_DIR=/opt/dcas/numba-cache \
    NUMBA_CPU_NAME=generic \
    NUMBA_CPU_FEATURES="" \
    PYTHONUNBUFFERED=1 \
    DCAS_TRACE_EXPORTER=gcp

# Dependencies first, from setup.py alone, so that a change of code reuses this layer: in a folder holding only
# setup.py, pip installs an empty `dcas` with every requirement, and the `cloudtrace` extra (the Cloud Trace
# exporter). The venv sees the base's packages (the Beam SDK image's Beam and its pinned dependencies); pip
# refuses a Beam other than BEAM_VERSION.
RUN --mount=type=bind,source=setup.py,target=/tmp/dcas-deps/setup.py \
    --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python3 -m venv --system-site-packages "$VIRTUAL_ENV" \
 && pip install --no-cache-dir --disable-pip-version-check "apache-beam[gcp]==${BEAM_VERSION}" "/tmp/dcas-deps[cloudtrace]"

# Then the code; `pip check` fails the build on any conflict among everything installed.
RUN --mount=type=bind,source=.,target=/tmp/dcas-src,rw \
    pip install --no-cache-dir --disable-pip-version-check --no-deps --force-reinstall /tmp/dcas-src \
 && pip check \
 && python -c "import apache_beam, sys; v = apache_beam.__version__; sys.exit(v != '${BEAM_VERSION}' and f'Beam {v}')" \
 && python -c "import opentelemetry.exporter.cloud_trace" \
 && site=$(python -c "import pipelines, os; print(os.path.dirname(os.path.dirname(pipelines.__file__)))") \
 && ln -s "$site/pipelines" /opt/dcas/pipelines

COPY deploy/image/dcas-role /usr/local/bin/dcas-role

# Compile every kernel the pipeline and the in-process engine use, through the real entry points (the in-process
# codec, the local Beam runner, compress and decompress), then hand the cache to the runtime user.
RUN if [ "${RUNTIME_UID}" != 0 ]; then \
        groupadd --system --gid "${RUNTIME_UID}" dcas \
     && useradd --uid "${RUNTIME_UID}" --gid dcas --create-home --home-dir /home/dcas --shell /usr/sbin/nologin dcas; \
    else mkdir -p /home/dcas; fi \
 && mkdir -p "$NUMBA_CACHE_DIR" /tmp/warm \
 && python -c "import sysconfig, pathlib; \
src = b''.join(p.read_bytes() for p in sorted(pathlib.Path(sysconfig.get_paths()['stdlib']).glob('*.py'))); \
pathlib.Path('/tmp/warm/in.txt').write_bytes((src * 2)[:3_000_000] + bytes(range(256)))" \
 && dcas compress /tmp/warm/in.txt -o /tmp/warm/a.dcz -q --chunk-size 256K \
 && dcas decompress /tmp/warm/a.dcz -o /tmp/warm/a.out -q \
 && dcas compress /tmp/warm/in.txt -o /tmp/warm/b.dcz -q --chunk-size 256K --workers 1 \
 && dcas decompress /tmp/warm/b.dcz -o /tmp/warm/b.out -q --workers 1 \
 && cmp /tmp/warm/in.txt /tmp/warm/a.out && cmp /tmp/warm/in.txt /tmp/warm/b.out \
 && rm -rf /tmp/warm /tmp/beam-* \
 && chown -R "${RUNTIME_UID}:${RUNTIME_UID}" "$NUMBA_CACHE_DIR"

# The pipeline the flex-template launcher runs: `gcloud dataflow flex-template build --image` cannot set it per
# template, so the streaming template's image is this one built with PIPELINE=streaming (only this layer differs).
ARG PIPELINE=batch
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/dcas/pipelines/${PIPELINE}.py

WORKDIR /home/dcas
USER ${RUNTIME_UID}:${RUNTIME_UID}
EXPOSE 8080
ENTRYPOINT ["/opt/apache/beam/boot"]
