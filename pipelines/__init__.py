"""DCaS pipelines: `pipelines.batch` compresses and decompresses files chunk-parallel on Beam."""
from __future__ import annotations
