"""Job messages on the wire: the versioned Avro schema (JSON encoding) and JobRequest <-> bytes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import fastavro

from adapters.jobs import JobRequest

__all__ = ["SCHEMA_VERSION", "SCHEMA_ID", "schema_text", "encode_job_message", "decode_job_message"]

SCHEMA_VERSION = 1
# The schema's name in Pub/Sub; a new version is a new schema (and revision), never an edit.
SCHEMA_ID = f"dcas-job-v{SCHEMA_VERSION}"
_SCHEMA_PATH = Path(__file__).with_name("schemas") / f"job_message_v{SCHEMA_VERSION}.avsc"
_OPTIONAL = ("table_uri", "trace_context")


def schema_text() -> str:
    return _SCHEMA_PATH.read_text()


_PARSED = fastavro.parse_schema(json.loads(schema_text()))


def encode_job_message(request: JobRequest) -> tuple[bytes, dict[str, str]]:
    """The message body (Avro JSON encoding, as the topic's schema expects) and its attributes."""
    record = {"schema_version": SCHEMA_VERSION, **request.to_dict()}
    for name in _OPTIONAL:
        record[name] = record[name] or ""
    fastavro.validation.validate(record, _PARSED, raise_errors=True)
    attributes = {"job_id": request.job_id, "attempt": str(request.attempt),
                  "schema_version": str(SCHEMA_VERSION), "owner": request.owner}
    return json.dumps(record, sort_keys=True).encode("utf-8"), attributes


def decode_job_message(data: bytes, attributes: Mapping[str, str] | None = None) -> JobRequest:
    """The JobRequest in a message body; ValueError says what is wrong with a bad one."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"job message is not JSON: {e}") from None
    if not isinstance(record, dict):
        raise ValueError("job message is not a JSON object")
    version = record.pop("schema_version", None)
    if version != SCHEMA_VERSION:
        raise ValueError(f"job message schema version {version!r} is not {SCHEMA_VERSION}")
    try:
        fastavro.validation.validate({"schema_version": version, **record}, _PARSED, raise_errors=True)
    except fastavro.validation.ValidationError as e:
        raise ValueError(f"job message does not match the schema: {' '.join(str(e).split())}") from None
    for name in _OPTIONAL:
        record[name] = record.get(name) or None
    return JobRequest.from_dict(record)
