"""Host-memory allocator settings for XLA:CPU training: huge pages for the step's buffers, and an
opt-in to keep freed blocks for reuse (glibc malloc).

Huge pages (the default for the `research-*` commands). XLA:CPU allocates each run's temporary
buffers as one block (ResNet-50 at batch 8: ~710 MB a training step), which glibc maps fresh and
unmaps again, so every step faults the block in again, 4 KiB at a time (~180k minor faults and
~0.4 s of system CPU a ResNet-50 step on 2 cores). Where transparent huge pages are on "madvise"
(the common kernel default), glibc's `glibc.malloc.hugetlb=1` tunable (glibc >= 2.35) has malloc
advise them for the blocks it maps: 2 MiB faults instead, 512 times fewer. A tunable is read once,
when the process starts, so `restart_with_huge_pages()` -- called when `research` is imported by
one of its own commands, before JAX is -- re-executes the command with it added to GLIBC_TUNABLES
(same interpreter, arguments and pid; ~0.05 s). Measured on a 2-core AMD EPYC (Zen 4), jax
0.10.2, `research-benchmark` alternating without and with it: ResNet-50 (batch 8, 224x224)
1,508/1,544/1,509 -> 1,325/1,456/1,372 ms a step, ResNet-20 (batch 128) 259/277 -> 221/225,
LeNet-5 4.75/5.32 -> 4.30/5.22; a whole ResNet-50 benchmark run 3.92M -> 0.44M minor faults.
RESEARCH_HUGE_PAGES=0 turns it off; it changes nothing where THP is "always" (already huge) or
"never", on other C libraries, or when GLIBC_TUNABLES already sets the tunable.

Keeping freed blocks (opt-in). Why: each run of a compiled XLA:CPU program allocates its temporary
buffers as one block and frees it when the run ends (ResNet-20 at batch 128: a 301 MB block per
training step). glibc's malloc serves a block that large with a fresh `mmap` and returns it with
`munmap`, and each thread of XLA's pool allocates from an arena of its own where that is always
so. Every step then page-faults the whole block in again: 93k minor page faults per ResNet-20
step, ~45 ms of a 280 ms step on a 2-core machine (`/usr/bin/time -v` shows the fault count).

What: `retain_freed_memory()` tells glibc (`mallopt`) to use one arena for all threads
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
import sys
from typing import Optional, Sequence

ENV_VAR = "RESEARCH_RETAIN_FREED_MEMORY"
HUGE_PAGES_ENV_VAR = "RESEARCH_HUGE_PAGES"
_HUGETLB = "glibc.malloc.hugetlb"

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


def _glibc_version() -> Optional[tuple]:
  """(major, minor) of the running glibc, else None (confstr: no scan of the executable)."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None
  except (AttributeError, OSError, ValueError):
    return None


def _transparent_huge_pages() -> str:
  """The kernel's transparent-huge-page mode ("always", "madvise", "never"), "" if unknown."""
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      text = f.read()
  except OSError:
    return ""
  return text[text.find("[") + 1:text.find("]")] if "[" in text else ""


def huge_page_tunables() -> Optional[str]:
  """The GLIBC_TUNABLES value with `glibc.malloc.hugetlb=1` added, or None where adding it would
  change nothing or is turned off (see the module docstring)."""
  if os.environ.get(HUGE_PAGES_ENV_VAR) == "0" or platform.system() != "Linux":
    return None
  version = _glibc_version()
  if version is None or version < (2, 35) or _transparent_huge_pages() != "madvise":
    return None
  current = os.environ.get("GLIBC_TUNABLES", "")
  if _HUGETLB in current:
    return None
  return f"{current}:{_HUGETLB}=1" if current else f"{_HUGETLB}=1"


def is_own_command(argv: Sequence[str]) -> bool:
  """Whether the interpreter command line `argv` (sys.orig_argv) runs one of research's commands:
  a `research-*` console script or `python -m research.cli.<command>`."""
  args = list(argv[1:])
  while args and args[0].startswith("-") and args[0] != "-m":  # interpreter options (-u, -O, -X ...)
    args = args[2:] if args[0] in ("-X", "-W") else args[1:]
  if len(args) >= 2 and args[0] == "-m":
    return args[1].startswith("research.cli.")
  return bool(args) and os.path.basename(args[0]).startswith("research-")


def restart_with_huge_pages() -> None:
  """Re-executes this process with `huge_page_tunables()` (same interpreter, arguments and pid)
  when it runs one of research's own commands; returns where there is nothing to change."""
  argv = getattr(sys, "orig_argv", None)
  if not argv or not is_own_command(argv):
    return
  tunables = huge_page_tunables()
  if tunables is None:
    return
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  os.execve(sys.executable, [sys.executable, *argv[1:]], {**os.environ, "GLIBC_TUNABLES": tunables})
