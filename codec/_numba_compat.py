"""A patch to numba: its on-disk cache loads compiled kernels without first setting up its compiler."""
from __future__ import annotations

# Checked against numba 0.68.1 (numba/core/caching.py, Cache.load_overload). Installed when
# codec.huffman imports numba, in every process that runs the kernels.
#
# Why: numba's Cache.load_overload calls target_context.refresh() before it reads the cache. The
# refresh imports and installs every typing and lowering registry numba has (~100 modules: linalg,
# random, typed dict/list, cffi, unicode...), which compiling needs and loading compiled code
# does not: ~0.08 s of the first kernel call (0.18 -> 0.11 s for a 4 MiB chunk), under numba's
# compile lock, so on one core while the other workers wait: serial time in every run. What the
# cached code does need is the runtime (NRT) registered with LLVM before it is linked, which the
# refresh did by the way: the patch does that alone. A cache miss still compiles with everything
# set up: numba's compiler refreshes both contexts itself (CompilerBase.__init__).
# A change along these lines was proposed upstream (numba/numba#9806, "Only refresh target_context
# if objmode is used"), closed unmerged.

import numba
from numba.core import caching
from numba.core.runtime import rtsys

CHECKED_VERSIONS = ("0.68.",)

_original_load_overload = caching.Cache.load_overload


def _load_overload(self, sig, target_context):
    rtsys.initialize(target_context)
    with self._guard_against_spurious_io_errors():
        return self._load_overload(sig, target_context)
    # None returned if the `with` block swallows an exception, as in numba's own


def applies() -> bool:
    """Whether the patch fits this numba: a checked version whose loader still refreshes first."""
    names = getattr(_original_load_overload, "__code__", None)
    return (numba.__version__.startswith(CHECKED_VERSIONS) and names is not None
            and "refresh" in names.co_names and "_load_overload" in names.co_names
            and hasattr(caching.Cache, "_guard_against_spurious_io_errors"))


def install() -> bool:
    """Patches numba's cache loader (idempotent); returns whether it did (see applies())."""
    if not applies():
        return False
    caching.Cache.load_overload = _load_overload
    return True


install()
