"""The I/O accounting behind benchmarks/io_bytes.py: parsing /proc/<pid>/io and the per-byte figures."""
from __future__ import annotations

import sys

import pytest

from benchmarks.io_bytes import IoCounts, parse_proc_io, per_input_byte, run_counted

PROC_IO = """rchar: 3000
wchar: 1500
syscr: 7
syscw: 5
read_bytes: 4096
write_bytes: 8192
cancelled_write_bytes: 4096
"""


def test_proc_io_text_is_read_field_by_field():
    counts = parse_proc_io(PROC_IO)
    assert counts == IoCounts(rchar=3000, wchar=1500, read_bytes=4096, write_bytes=8192, cancelled_write_bytes=4096)
    assert counts.stored == 4096


def test_figures_per_input_byte_leave_out_what_the_tiny_run_did():
    tiny = IoCounts(rchar=1000, wchar=100, write_bytes=100)
    big = IoCounts(rchar=1000 + 2 * 500, wchar=100 + 300, write_bytes=100 + 400, cancelled_write_bytes=100)
    assert per_input_byte(big, tiny, 500) == {"read": 2.0, "written": 0.6, "stored": 0.6}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/io is Linux's")
def test_a_childs_reads_and_writes_are_counted_once_it_is_reaped(tmp_path):
    target = tmp_path / "out.bin"
    script = f"open({str(target)!r}, 'wb').write(b'x' * 3_000_000)"
    counted = run_counted([sys.executable, "-c", script])
    assert 3_000_000 <= counted.wchar < 3_100_000
