"""The image's entry points, run in Docker: `make test-image` builds the image (on a stand-in base here) first."""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("DCAS_IMAGE", "")
DOCKER = os.environ.get("DOCKER", "docker")
pytestmark = pytest.mark.skipif(not IMAGE, reason="needs a built image: `make test-image` builds it and runs these")


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def run_in_image(*command: str, entrypoint: str = "dcas-role", options: tuple[str, ...] = (),
                 check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return docker("run", "--rm", "--network", "none", *options, "--entrypoint", entrypoint, IMAGE, *command,
                  check=check, timeout=timeout)


def image_config(key: str):
    import json
    return json.loads(docker("image", "inspect", "--format", "{{json .Config}}", IMAGE).stdout)[key]


def is_standin() -> bool:
    return (image_config("Labels") or {}).get("org.dcas.standin") == "true"


def test_the_image_runs_as_the_non_root_dcas_user_by_default():
    assert run_in_image("-u", entrypoint="id").stdout.strip() == "10001"
    assert run_in_image("-un", entrypoint="id").stdout.strip() == "dcas"


def test_the_entrypoint_is_the_beam_boot_binary_and_the_launcher_is_where_dataflow_runs_it():
    assert image_config("Entrypoint") == ["/opt/apache/beam/boot"]
    run_in_image("-c", 'test -x /opt/apache/beam/boot && test -x /opt/google/dataflow/python_template_launcher'
                       ' && test -f "$FLEX_TEMPLATE_PYTHON_PY_FILE"'
                       ' && test "$FLEX_TEMPLATE_PYTHON_PY_FILE" = /opt/dcas/pipelines/batch.py',
                 entrypoint="sh")


def test_the_real_boot_binary_answers_where_the_base_is_the_beam_sdk_image():
    if is_standin():
        pytest.skip("stand-in base: /opt/apache/beam/boot is a stub; the real one is checked where the Beam SDK "
                    "image can be pulled (the release workflow) and on Dataflow")
    done = run_in_image(entrypoint="/opt/apache/beam/boot", check=False)
    # Without --id and the runner's endpoints the boot binary stops at once with its own complaint.
    assert done.returncode != 0 and "id" in (done.stdout + done.stderr).lower()


def test_pip_check_passes_and_beam_is_the_version_setup_py_pins():
    run_in_image("check", entrypoint="pip")
    pin = re.search(r'"apache-beam\[gcp\]==([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    version = run_in_image("-c", "import apache_beam; print(apache_beam.__version__)", entrypoint="python")
    assert version.stdout.strip() == pin


@pytest.fixture
def shared_dir(tmp_path):
    # The container's user (10001) writes here; the host's pytest reads.
    tmp_path.chmod(0o777)
    yield tmp_path
    # Files the container made belong to 10001: a root-less host cannot remove them without this.
    docker("run", "--rm", "--network", "none", "--user", "0", "-v", f"{tmp_path}:/data", "--entrypoint", "sh",
           IMAGE, "-c", "rm -rf /data/*", check=False)


def test_a_job_round_trips_on_the_local_runner_in_the_container_offline_with_no_kernel_compiled(shared_dir):
    data = b"".join(p.read_bytes() for p in sorted((ROOT / "codec").glob("*.py"))) * 20 + bytes(range(256)) * 99
    (shared_dir / "in.txt").write_bytes(data)
    volume = ("-v", f"{shared_dir}:/data", "-e", "NUMBA_DEBUG_CACHE=1")
    compress = run_in_image("batch", "--input=/data/in.txt", "--output=/data/in.txt.dcz", "--chunk_size=64KiB",
                            options=volume)
    decompress = run_in_image("batch", "--input=/data/in.txt.dcz", "--output=/data/back.txt",
                              "--mode=decompress", options=volume)
    assert (shared_dir / "back.txt").read_bytes() == data
    assert (shared_dir / "in.txt.dcz.meta.json").is_file()
    log = compress.stdout + compress.stderr + decompress.stdout + decompress.stderr
    # NUMBA_DEBUG_CACHE logs each cached kernel it loads, and each it has to compile and save.
    assert "[cache] data loaded from" in log
    assert "[cache] data saved to" not in log and "[cache] index saved to" not in log


def test_the_dcas_command_works_in_the_container(shared_dir):
    (shared_dir / "a.txt").write_bytes(b"abracadabra " * 5000)
    volume = ("-v", f"{shared_dir}:/data")
    run_in_image("dcas", "compress", "/data/a.txt", "-o", "/data/a.dcz", "-q", options=volume)
    info = run_in_image("dcas", "info", "/data/a.dcz", options=volume)
    assert '"chunks"' in info.stdout
    run_in_image("dcas", "verify", "/data/a.dcz", "-q", options=volume)



def test_spans_go_to_cloud_trace_by_default_and_without_credentials_tracing_is_off_after_one_warning():
    assert "DCAS_TRACE_EXPORTER=gcp" in image_config("Env")
    done = run_in_image("-c", "from adapters import tracing; tracing.configure_from_env('dcas-test'); "
                              "print(tracing.enabled())", entrypoint="python")
    assert done.stdout.split() == ["False"]
    [warning] = done.stderr.splitlines()
    assert warning.startswith("tracing is off: DCAS_TRACE_EXPORTER=gcp needs Google credentials")


def test_an_unknown_role_is_refused_with_the_list_of_roles():
    done = run_in_image("compressor", check=False)
    assert done.returncode == 64
    assert "unknown role 'compressor'" in done.stderr and "manager status" in done.stderr


def test_a_service_role_whose_app_is_not_in_the_image_says_so_in_one_line():
    done = run_in_image("manager", options=("-e", "DCAS_HTTP_APP=services.nothing_here:app"), check=False)
    assert done.returncode == 78
    assert done.stderr.strip() == ("dcas-role: manager: module services.nothing_here is not in this image "
                                   "(services/http not merged yet?)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Emulator hosts that nothing listens on: the app builds its clients without credentials and /healthz needs none.
OFFLINE_BACKENDS = ("-e", "GOOGLE_CLOUD_PROJECT=dcas-test", "-e", "DCAS_BUCKET=dcas-test",
                    "-e", "PUBSUB_EMULATOR_HOST=127.0.0.1:9", "-e", "FIRESTORE_EMULATOR_HOST=127.0.0.1:9",
                    "-e", "STORAGE_EMULATOR_HOST=http://127.0.0.1:9")


@pytest.mark.parametrize("role", ["manager", "status"])
def test_the_http_service_roles_answer_as_the_non_root_user(role):
    if not (ROOT / "services" / "http" / "main.py").is_file():
        pytest.skip("services/http is not in this tree yet (issue 9); the roles serve $DCAS_HTTP_APP, "
                    "default services.http.main:app_from_env (deploy/image/dcas-role)")
    port = free_port()
    name = f"dcas-test-{role}-{port}"
    docker("run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080", *OFFLINE_BACKENDS,
           "--entrypoint", "dcas-role", IMAGE, role)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(docker("logs", name, check=False).stderr)
                time.sleep(0.5)
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
    finally:
        docker("rm", "-f", name, check=False)


def test_on_a_read_only_root_the_cache_copied_as_the_pods_init_container_does_compiles_nothing(shared_dir):
    # deploy/k8s: an init container copies the build's numba cache into a pod volume mounted over the cache dir.
    cache = shared_dir / "numba-cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    run_in_image("-R", "/opt/dcas/numba-cache/.", "/numba-cache/", entrypoint="cp",
                 options=("--read-only", "-v", f"{cache}:/numba-cache"))
    (shared_dir / "a.txt").write_bytes(b"read-only root " * 9000)
    done = run_in_image("dcas", "compress", "/data/a.txt", "-o", "/data/a.dcz", "-q",
                        options=("--read-only", "--tmpfs", "/tmp", "-v", f"{shared_dir}:/data",
                                 "-v", f"{cache}:/opt/dcas/numba-cache", "-e", "NUMBA_DEBUG_CACHE=1"))
    assert "[cache] data loaded from" in done.stdout + done.stderr
    assert "[cache] data saved to" not in done.stdout + done.stderr


@pytest.mark.parametrize("role, prog", [("batch", "python -m pipelines.batch"),
                                        ("streaming", "python -m pipelines.streaming")])
def test_both_pipelines_the_templates_launch_import_and_parse_in_the_image(role, prog):
    done = run_in_image(role, "--help")
    assert done.stdout.startswith(f"usage: {prog}")
