"""What the reconciler sweeps besides stale jobs: direct uploads never confirmed, and deleted jobs past their grace period."""
from __future__ import annotations

import datetime
import json
import logging

from services.uploads import PENDING_DIR, job_prefix, pending_job_id

__all__ = ["expire_uploads", "purge_deleted", "sweep"]

log = logging.getLogger("dcas.cleanup")


def sweep(adapters, now: datetime.datetime) -> dict[str, list[str]]:
    """One cleanup pass with the times `adapters.settings` holds (DCAS_UPLOAD_TTL,
    DCAS_DELETED_GRACE); nothing without a blob store (the job service without the HTTP side)."""
    if adapters.blobs is None:
        return {}
    settings = adapters.settings
    return {"expired_uploads": expire_uploads(adapters, settings.bucket, now, settings.upload_ttl),
            "purged_jobs": purge_deleted(adapters, settings.bucket, now, settings.deleted_grace)}


def expire_uploads(adapters, bucket: str, now: datetime.datetime, ttl: float) -> list[str]:
    """Ends the direct uploads opened more than `ttl` seconds before `now` and never confirmed:
    the record goes first (a confirmation from then on answers 404), then the session (the client
    can no longer finish it), then whatever the job's folder holds, unless the upload was confirmed
    meanwhile (its job owns the objects). Returns the job ids of the expired uploads."""
    expired = []
    for record_uri in adapters.blobs.list_prefix(f"gs://{bucket}/{PENDING_DIR}"):
        job_id = pending_job_id(record_uri)
        try:
            record = json.loads(b"".join(adapters.blobs.read_chunks(record_uri)))
        except FileNotFoundError:
            continue  # confirmed meanwhile
        except ValueError:
            record = {}  # unreadable: it can never be confirmed, so it is as good as expired
        opened = _parse_time(record.get("opened"))
        if opened is not None and (now - opened).total_seconds() < ttl:
            continue
        adapters.blobs.delete_prefix(record_uri)
        if record.get("session"):
            try:
                adapters.blobs.cancel_session(record["session"])
            except Exception as e:  # noqa: BLE001 - an unfinished session holds no object anyway
                log.info("upload %s: session not cancelled: %s: %s", job_id, type(e).__name__, e)
        if adapters.status.get(job_id) is None:
            adapters.blobs.delete_prefix(job_prefix(bucket, job_id))
        log.info("upload %s expired unconfirmed", job_id, extra={"job_id": job_id})
        expired.append(job_id)
    return expired


def purge_deleted(adapters, bucket: str, now: datetime.datetime, grace: float) -> list[str]:
    """Removes jobs deleted more than `grace` seconds before `now`: their objects once more (a worker
    may have been writing when the owner deleted the job), then their status documents."""
    cut = (now - datetime.timedelta(seconds=grace)).astimezone(datetime.timezone.utc)
    purged = []
    for status in adapters.status.deleted_jobs(cut.isoformat(timespec="microseconds")):
        adapters.blobs.delete_prefix(job_prefix(bucket, status.job_id))
        adapters.status.purge(status.job_id)
        log.info("deleted job %s purged", status.job_id, extra={"job_id": status.job_id})
        purged.append(status.job_id)
    return purged


def _parse_time(text) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
