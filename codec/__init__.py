"""DCaS codec: byte-level canonical Huffman inside the chunked, seekable `.dcz` container."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names load on first use (PEP 562): `import codec.sizes` or `codec.counting` must not load numba
# and LLVM (~130 MiB), which the HTTP Manager never needs. `codec.histogram` etc. work as before.
_HOME = {
    "histogram": "chunk", "encode_chunk": "chunk", "decode_chunk": "chunk",
    "DEFAULT_CHUNK_SIZE": "sizes", "MAX_CHUNK_SIZE": "sizes",
    "ChunkEntry": "container", "encode_frame": "container", "decode_frame": "container",
    "read_seek_table": "container", "FormatError": "errors",
    "default_threads": "parallel", "file_histogram": "parallel", "compress_with_file_table": "parallel",
    "encode": "stream", "decode": "stream", "compress_stream": "stream", "decompress_stream": "stream",
    "decode_range": "stream", "info": "stream", "verify": "stream",
}

__all__ = [
    "FormatError", "histogram", "encode_chunk", "decode_chunk",
    "DEFAULT_CHUNK_SIZE", "MAX_CHUNK_SIZE", "ChunkEntry", "encode_frame", "decode_frame",
    "read_seek_table", "default_threads", "file_histogram", "compress_with_file_table",
    "encode", "decode", "compress_stream", "decompress_stream", "decode_range", "info", "verify",
]

if TYPE_CHECKING:
    from codec.chunk import decode_chunk, encode_chunk, histogram  # noqa: F401
    from codec.container import ChunkEntry, decode_frame, encode_frame, read_seek_table  # noqa: F401
    from codec.errors import FormatError  # noqa: F401
    from codec.parallel import compress_with_file_table, default_threads, file_histogram  # noqa: F401
    from codec.sizes import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE  # noqa: F401
    from codec.stream import (  # noqa: F401
        compress_stream, decode, decode_range, decompress_stream, encode, info, verify,
    )


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        if name.startswith("__"):
            raise AttributeError(name)
        try:  # a submodule: `import codec; codec.container.read_seek_table(...)`
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise  # the submodule exists; something it imports does not
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
