"""Emulators for tests: the package's launchers (services.processes, services.emulators), re-exported."""
from __future__ import annotations

from services.emulators import (fake_gcs_server_binary, start_fake_gcs_server, start_firestore_emulator,
                                start_pubsub_emulator)
from services.processes import EmulatorProcess, free_port, http_ready, start_emulator

__all__ = ["EmulatorProcess", "fake_gcs_server_binary", "free_port", "http_ready", "start_emulator",
           "start_fake_gcs_server", "start_firestore_emulator", "start_pubsub_emulator"]
