"""The Manager and Status services over HTTP: the FastAPI app and the web page's static files."""
from __future__ import annotations

from services.http.app import HttpSettings, create_app

__all__ = ["HttpSettings", "create_app"]
