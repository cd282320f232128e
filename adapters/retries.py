"""The one retry policy of every call to GCS, Pub/Sub and Firestore: the clients' own Retry, transient errors only, bounded."""
from __future__ import annotations

from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type

__all__ = ["CALL_TIMEOUT", "RETRY_DEADLINE", "TRANSIENT_ERRORS", "gcs_retry", "firestore_retry",
           "pubsub_retry"]

# A call (with its retries) gives up after this long; each attempt waits at most CALL_TIMEOUT.
# Long enough to ride out a server restart or a throttled burst, short enough that a job fails
# with a reason (and the reconciler gets its turn) instead of hanging.
RETRY_DEADLINE = 60.0
CALL_TIMEOUT = 30.0
_INITIAL, _MAXIMUM, _MULTIPLIER = 0.25, 10.0, 2.0

# Errors a retry can cure: throttling, a server restarting or overloaded, a lost connection.
# Not Aborted: a Firestore transaction retries its own aborts (with a fresh read); retrying the
# commit alone would reuse a dead transaction. Not InvalidArgument, NotFound, PermissionDenied.
TRANSIENT_ERRORS = (
    exceptions.TooManyRequests,       # 429, RESOURCE_EXHAUSTED
    exceptions.InternalServerError,   # 500, INTERNAL
    exceptions.BadGateway,            # 502
    exceptions.ServiceUnavailable,    # 503, UNAVAILABLE (also a dropped gRPC connection)
    exceptions.GatewayTimeout,        # 504, DEADLINE_EXCEEDED
    ConnectionError,
)

_POLICY = Retry(predicate=if_exception_type(*TRANSIENT_ERRORS), initial=_INITIAL, maximum=_MAXIMUM,
                multiplier=_MULTIPLIER, timeout=RETRY_DEADLINE)


def pubsub_retry() -> Retry:
    """For publish and the admin calls (topics, schemas, subscriptions)."""
    return _POLICY


def firestore_retry() -> Retry:
    """For document reads and writes, and reads inside a transaction (never its commit)."""
    return _POLICY


def gcs_retry() -> Retry:
    """For google-cloud-storage calls: the library's own predicate (it also knows requests' and
    urllib3's connection errors and which HTTP codes are transient), with our bounded deadline.

    Only for idempotent calls or ones made idempotent by a precondition (if_generation_match),
    as the storage library itself requires.
    """
    from google.cloud.storage.retry import DEFAULT_RETRY
    return DEFAULT_RETRY.with_timeout(RETRY_DEADLINE).with_delay(_INITIAL, _MAXIMUM, _MULTIPLIER)
