"""An ASGI app served by uvicorn on a free loopback port, in a thread, for tests that need real HTTP."""
from __future__ import annotations

import contextlib
import threading
import time

import uvicorn

from services.processes import free_port


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1"):
    """Yields the base URL while uvicorn serves `app`; stops it (and waits for it) afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
