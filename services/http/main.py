"""The Manager and Status app as a process: settings from the environment, adapters from bootstrap()."""
from __future__ import annotations

from fastapi import FastAPI

from services.bootstrap import bootstrap, configure_tracing
from services.config import Settings
from services.http.app import HttpSettings, create_app
from services.uploads import UploadLimits

__all__ = ["app_from_env", "serve"]


def app_from_env() -> FastAPI:
    """`uvicorn --factory services.http.main:app_from_env`: the app on the adapters Settings.from_env() names."""
    settings = Settings.from_env()
    configure_tracing(settings, "dcas-manager")
    adapters = bootstrap(settings)
    app = create_app(adapters, HttpSettings(settings.bucket, UploadLimits.from_env(), id_tokens=id_tokens_from_env()))
    app.router.on_shutdown.append(adapters.close)
    return app


def id_tokens_from_env(environ=None):
    """DCAS_ID_TOKEN_AUDIENCE (the service's URL) turns on Google-signed identity tokens;
    DCAS_ID_TOKEN_CERTS_URL replaces Google's certificates URL (tests, other issuers' mirrors)."""
    import os

    from services.identity import GOOGLE_CERTS_URL, IdTokens
    env = os.environ if environ is None else environ
    audience = env.get("DCAS_ID_TOKEN_AUDIENCE")
    return IdTokens(audience, env.get("DCAS_ID_TOKEN_CERTS_URL") or GOOGLE_CERTS_URL) if audience else None


def serve(host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning") -> None:
    import sys

    import uvicorn

    from services.stack import configure_json_logging
    configure_json_logging(sys.stderr)  # JSON lines with the job id, like the stack's and the pipeline's
    # glibc's own malloc thresholds, on purpose: a fixed low mmap threshold returned every freed
    # upload chunk to the system, but each new one then page-faulted in afresh, which tripled the
    # Manager's CPU per uploaded byte without lowering its peak RSS (docs/benchmarks.md).
    # One worker process: the upload limits and the event listeners live in it. h11 and the
    # default loop: no optional C extensions needed.
    uvicorn.run(app_from_env(), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=5)


def _main(argv=None) -> None:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m services.http.main",
                                     description="Serve the Manager and Status API and the web page.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    _main()
