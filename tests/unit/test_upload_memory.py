"""What one upload holds in memory while it streams to storage: its chunks, not the file."""
from __future__ import annotations

import asyncio
import tracemalloc

import numpy as np

from services.uploads import UploadLimits, receive_upload

CHUNK = 1 << 20


class _SizesOnly:
    """A BlobStore whose uploads keep only the sizes they were sent (the bytes are dropped, as
    storage takes them off our hands)."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def open_upload(self, uri: str):
        return self

    def write(self, data) -> None:
        self.sent.append(len(data))

    def commit(self) -> int:
        return sum(self.sent)

    def abort(self) -> None:
        pass


def _peak_while_receiving(pieces: list[bytes], count: bool):
    blobs = _SizesOnly()

    async def body():
        for piece in pieces:
            await asyncio.sleep(0)
            yield piece

    # A first upload loads what the first one imports (anyio's worker threads, ...): not the upload's.
    asyncio.run(receive_upload(_SizesOnly(), "gs://b/w", body(), UploadLimits(buffer_size=CHUNK), count=count))
    tracemalloc.start()
    try:
        size, histogram = asyncio.run(receive_upload(blobs, "gs://b/x", body(), UploadLimits(buffer_size=CHUNK),
                                                     count=count))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return size, histogram, blobs.sent, peak


def test_an_upload_of_eight_chunks_holds_one_chunk_and_sends_whole_ones():
    pieces = [bytes([i % 251]) * 65536 for i in range(8 * 16 + 3)]  # 8 chunks and 3 pieces, made before tracing
    size, histogram, sent, peak = _peak_while_receiving(pieces, count=False)
    assert size == sum(map(len, pieces)) and histogram is None
    assert sent == [CHUNK] * 8 + [3 * 65536]
    assert peak < 1.25 * CHUNK, f"receiving held {peak} bytes at its peak for {CHUNK}-byte chunks"


def test_counting_the_histogram_adds_well_under_a_chunk():
    pieces = [bytes(range(256)) * 256 for _ in range(4 * 16)]  # 4 chunks of every byte value
    size, histogram, sent, peak = _peak_while_receiving(pieces, count=True)
    assert np.array_equal(histogram, np.full(256, size // 256, dtype=np.uint64))
    assert peak < 1.75 * CHUNK, f"receiving and counting held {peak} bytes at its peak"
