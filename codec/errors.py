"""The one exception type that every reader of a bad `.dcz` container raises."""
from __future__ import annotations


class FormatError(ValueError):
    """A container or chunk payload is malformed, truncated, corrupted or over a size limit."""
