"""DCaS codec: byte-level canonical Huffman inside the chunked, seekable `.dcz` container."""
from __future__ import annotations

from codec.chunk import decode_chunk, encode_chunk, histogram
from codec.errors import FormatError

__all__ = ["FormatError", "histogram", "encode_chunk", "decode_chunk"]
