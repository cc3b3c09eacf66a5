"""Host-memory allocator settings for XLA:CPU training: keep freed blocks for reuse (glibc malloc).

Why. Each run of a compiled XLA:CPU program allocates its temporary buffers as one block and frees
it when the run ends (ResNet-20 at batch 128: a 301 MB block per training step). glibc's malloc
serves a block that large with a fresh `mmap` and returns it with `munmap`, and each thread of
XLA's pool allocates from an arena of its own where that is always so. Every step then
page-faults the whole block in again: 93k minor page faults per ResNet-20 step, ~45 ms of a 280 ms
step on a 2-core machine (`/usr/bin/time -v` shows the fault count).

What. `retain_freed_memory()` tells glibc (`mallopt`) to use one arena for all threads
(M_ARENA_MAX 1), to take no block from `mmap` (M_MMAP_MAX 0) and to hand freed heap back to the
system only above 2 GiB (M_TRIM_THRESHOLD): the next step reuses the pages of the last one. It is
opt-in, RESEARCH_RETAIN_FREED_MEMORY=1, applied when `research` is imported (before XLA starts its
threads: an arena is bound to a thread at its first allocation). Measured on 2 cores, batch 128:
ResNet-20's step 212 -> 190 ms, but LeNet-5's 5.2 -> 5.6 ms (its many small ops then contend for
the one arena's lock), and the process keeps its peak heap (ResNet-20: 1.7 GB resident instead of
0.9 GB). Worth it for models with large activations; nothing is changed without the variable,
or where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import os
import platform

ENV_VAR = "RESEARCH_RETAIN_FREED_MEMORY"

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# The largest value mallopt takes (an int): free heap above 2 GiB is still returned to the system.
_TRIM_THRESHOLD = 2**31 - 1


def retain_freed_memory() -> bool:
  """Applies the settings above when $RESEARCH_RETAIN_FREED_MEMORY is "1"; True if glibc took them."""
  if os.environ.get(ENV_VAR) != "1" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  return all(libc.mallopt(param, value) == 1 for param, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))
