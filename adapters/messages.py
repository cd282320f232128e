"""Job messages on the wire: the versioned Avro schema (JSON encoding) and JobRequest <-> bytes; the stored frequency table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import fastavro
import numpy as np

from adapters.jobs import JobRequest

__all__ = ["SCHEMA_VERSION", "SCHEMA_ID", "schema_text", "encode_job_message", "decode_job_message",
           "encode_frequency_table", "decode_frequency_table"]

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


def encode_frequency_table(counts, size: int) -> bytes:
    """The object a job's `table_uri` names: JSON `{"size": N, "frequencies": [256 counts]}`, the
    same `frequencies` list a container's metadata holds."""
    counts = np.asarray(counts, dtype=np.uint64)
    if counts.shape != (256,):
        raise ValueError(f"a frequency table has 256 counts, got shape {counts.shape}")
    if int(counts.sum()) != size:
        raise ValueError(f"the table counts {int(counts.sum())} bytes, not {size}")
    return json.dumps({"size": size, "frequencies": [int(c) for c in counts]}).encode("utf-8")


def decode_frequency_table(data: bytes) -> np.ndarray:
    """uint64[256] from encode_frequency_table's bytes; ValueError for anything else."""
    try:
        record = json.loads(data.decode("utf-8"))
        counts = np.asarray(record["frequencies"], dtype=np.uint64)
        size = int(record["size"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"not a frequency table: {e}") from None
    if counts.shape != (256,) or int(counts.sum()) != size:
        raise ValueError("not a frequency table: it needs 256 counts that add up to its size")
    return counts
