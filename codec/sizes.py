"""Byte sizes as people write them (`64K`, `4MiB`, `1G`), for the CLI and the pipeline options alike."""
from __future__ import annotations

import re

__all__ = ["DEFAULT_CHUNK_SIZE", "MAX_CHUNK_SIZE", "parse_size"]

# The container's chunk sizes (codec.container re-exports them). Here, in a module that imports
# neither numpy nor numba, so that job records and the HTTP services can name them cheaply.
DEFAULT_CHUNK_SIZE = 4 * 2**20
MAX_CHUNK_SIZE = 2**30

_UNITS = {None: 1, "k": 2**10, "m": 2**20, "g": 2**30}
# K, M and G are binary (1024-based), as in zstd and dd; `MB` is read the same way because nobody
# means 4,000,000-byte chunks. A bare `B` means bytes.
# ASCII only: int() would also read other scripts' digits ('\u0664M') and IGNORECASE would take the Kelvin
# sign for k; nobody means those, and the flex template's regex (templates/batch.json) admits ASCII only.
_SIZE = re.compile(r"\s*(\d+)\s*(?:([kmg])(?:i?b)?|b)?\s*", re.IGNORECASE | re.ASCII)


def parse_size(text: str | int) -> int:
    """`65536`, `64K`, `64KiB`, `4M`, `4MiB`, `1G`, `7B` → bytes; ValueError for anything else."""
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 65536, 64K, 4MiB)")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _UNITS[unit]
