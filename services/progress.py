"""A dependency-free terminal progress bar: a pure line renderer, a throttled writer, and a poller
for jobs (such as a Beam pipeline) that cannot call back after each chunk."""
from __future__ import annotations

import shutil
import threading
import time
from typing import Callable, TextIO

# Redraw at most this often: a redraw per 4 MiB chunk is cheap, but at several hundred MB/s on small
# chunks an unthrottled bar would spend its time writing to the terminal.
MIN_REDRAW_INTERVAL = 0.1
BAR_WIDTH = 24
MIN_BAR_WIDTH = 5


def format_bytes(n: float) -> str:
    """Human size in decimal units as `ls -h --si` and download meters print them: 1.5 MB, 812 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def format_duration(seconds: float) -> str:
    """`m:ss` (or `h:mm:ss`) for an ETA; `--:--` when it is not known yet."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "--:--"
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def render_progress(label: str, done: int, total: int | None, elapsed: float, width: int = 80) -> str:
    """One progress line, at most `width - 1` characters (so the cursor never wraps).

    With a known total: `label  42% [##########--------------] 11.3 MB/27.1 MB  85.2 MB/s  ETA 0:03`.
    Without one (reading a pipe): `label  11.3 MB  85.2 MB/s`.
    """
    rate = done / elapsed if elapsed > 0 else 0.0
    speed = f"{rate / 1e6:.1f} MB/s" if elapsed > 0 else "-- MB/s"
    limit = max(width - 1, 0)
    if not total:
        return f"{label} {format_bytes(done)}  {speed}"[:limit]
    fraction = min(max(done / total, 0.0), 1.0)
    eta = (total - done) / rate if rate > 0 else float("nan")
    head = f"{label} {fraction * 100:3.0f}% "
    tail = f" {format_bytes(done)}/{format_bytes(total)}  {speed}  ETA {format_duration(eta)}"
    # The bar gives way first on a narrow terminal: the numbers are what people read.
    bar_width = min(BAR_WIDTH, limit - len(head) - len(tail) - 2)
    if bar_width < MIN_BAR_WIDTH:
        return (head.rstrip() + tail)[:limit]
    filled = int(fraction * bar_width)
    return f"{head}[{'#' * filled}{'-' * (bar_width - filled)}]{tail}"


class ProgressBar:
    """Callable `progress(bytes_done)` for the codec's streaming API; draws on `stream` if enabled.

    Disabled (every call is a no-op) unless `enabled` is true: the CLI enables it only when stderr is a
    terminal and --quiet is not given, so logs and pipes never receive carriage-return noise.
    """

    def __init__(self, label: str, total: int | None, stream: TextIO, *, enabled: bool,
                 clock: Callable[[], float] = time.monotonic,
                 min_interval: float = MIN_REDRAW_INTERVAL) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.clock = clock
        self.min_interval = min_interval
        self.started = clock()
        self.last_drawn: float | None = None
        self.drawn_width = 0

    def __call__(self, bytes_done: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        finished = self.total is not None and bytes_done >= self.total
        if not finished and self.last_drawn is not None and now - self.last_drawn < self.min_interval:
            return
        self.last_drawn = now
        width = shutil.get_terminal_size(fallback=(80, 24)).columns
        line = render_progress(self.label, bytes_done, self.total, now - self.started, width)
        # Pad over the previous line so a shorter redraw leaves no stale characters behind.
        self.stream.write("\r" + line.ljust(self.drawn_width))
        self.stream.flush()
        self.drawn_width = len(line)

    def clear(self) -> None:
        """Erases the bar so the next message (summary or error) starts on a clean line."""
        if self.enabled and self.drawn_width:
            self.stream.write("\r" + " " * self.drawn_width + "\r")
            self.stream.flush()
            self.drawn_width = 0


class PollingProgress:
    """Reports a long-running job's progress from a thread: every `interval` seconds it calls
    `measure()` (bytes done so far, e.g. summed from the part objects a pipeline has written) and
    passes the most it has seen to `progress`.

    It never reports `total` itself: only the caller knows the job succeeded, and says so by calling
    `progress(total)` afterwards. A measurement that fails or shrinks (parts are deleted once they
    are published) is ignored, so the bar never goes backwards.
    """

    def __init__(self, progress: Callable[[int], None], measure: Callable[[], int], total: int,
                 interval: float) -> None:
        self.progress = progress
        self.measure = measure
        self.total = total
        self.interval = interval
        # Short enough of the total that the bar shows at most 99%: total - 1 still rounds to 100%.
        self.limit = max(total - 1 - total // 200, 0)
        self.best = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dcas-progress", daemon=True)

    def poll_once(self) -> int:
        try:
            done = int(self.measure())
        except Exception:  # noqa: BLE001 - a listing that fails mid-job is no reason to stop the job
            return self.best
        self.best = max(self.best, min(done, self.limit))
        self.progress(self.best)
        return self.best

    def _run(self) -> None:
        self.progress(0)
        while not self._stop.wait(self.interval):
            self.poll_once()

    def __enter__(self) -> "PollingProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
