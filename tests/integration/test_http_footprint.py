"""What the Manager process loads: its memory target (docs/benchmarks.md) leaves no room for Beam or numba."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]

# The app built as `python -m services.http.main` builds it, with clients for emulators that are
# not there (clients connect on first use). Prints the heavy packages that got loaded.
_PROBE = """
import json, sys
from services.http.main import app_from_env
import services.stack  # serve() takes its JSON logging from there
import codec
app_from_env()
codec.DEFAULT_CHUNK_SIZE, codec.FormatError  # names the Manager may use without a kernel
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"apache_beam", "numba", "llvmlite", "pyarrow"})))
"""


def test_building_the_manager_app_loads_neither_beam_nor_numba():
    env = {"PATH": "/usr/bin:/bin", "GOOGLE_CLOUD_PROJECT": "dcas-footprint",
           "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9", "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
           "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []

