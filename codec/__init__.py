"""DCaS codec: byte-level canonical Huffman inside the chunked, seekable `.dcz` container."""
from __future__ import annotations

from codec.chunk import decode_chunk, encode_chunk, histogram
from codec.container import (
    DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, ChunkEntry, decode_frame, encode_frame, read_seek_table,
)
from codec.errors import FormatError
from codec.parallel import compress_with_file_table, default_threads, file_histogram
from codec.stream import (
    compress_stream, decode, decode_range, decompress_stream, encode, info, verify,
)

__all__ = [
    "FormatError", "histogram", "encode_chunk", "decode_chunk",
    "DEFAULT_CHUNK_SIZE", "MAX_CHUNK_SIZE", "ChunkEntry", "encode_frame", "decode_frame",
    "read_seek_table", "default_threads", "file_histogram", "compress_with_file_table",
    "encode", "decode", "compress_stream", "decompress_stream", "decode_range", "info", "verify",
]
