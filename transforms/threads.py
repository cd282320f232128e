"""A DoFn base that runs its per-element work on a thread pool, for runners that call DoFns on one thread."""
from __future__ import annotations

import concurrent.futures
import os

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

__all__ = ["PooledFn", "pool_size"]


def pool_size(threads: int) -> int:
    """`threads`, or one per CPU core when it is 0."""
    return threads if threads > 0 else (os.cpu_count() or 1)


class PooledFn(beam.DoFn):
    """Runs `work(element)` for a bundle's elements on `threads` threads (0 = one per core) and emits
    `outputs(element, outcome)` for each when the bundle finishes.

    The streaming local runner calls every DoFn on one thread; the codec's kernels release the GIL,
    so chunk work on a pool uses the other cores. `work` must be safe off the DoFn's thread and must
    not raise (it returns a Failure instead); `outputs` runs on the DoFn's thread, where metrics and
    tagged outputs belong. With `threads=1` the work runs inline, element by element.
    """

    def __init__(self, threads: int = 0):
        self._threads = threads

    def work(self, element):
        raise NotImplementedError

    def outputs(self, element, outcome) -> list:
        raise NotImplementedError

    def setup(self):
        size = pool_size(self._threads)
        self._pool = concurrent.futures.ThreadPoolExecutor(size, "dcas-pool") if size > 1 else None
        self._pending = []

    def start_bundle(self):
        self._pending = []

    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        if self._pool is None:
            yield from self.outputs(element, self.work(element))
            return
        self._pending.append((element, self._pool.submit(self.work, element), timestamp, window))

    def finish_bundle(self):
        pending, self._pending = self._pending, []
        for element, future, timestamp, window in pending:
            for output in self.outputs(element, future.result()):
                if isinstance(output, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(output.tag, WindowedValue(output.value, timestamp, (window,)))
                else:
                    yield WindowedValue(output, timestamp, (window,))

    def teardown(self):
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=True)
