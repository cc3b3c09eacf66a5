"""research.host_memory: freed host memory is reused, not page-faulted in again (issue 11)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from research import host_memory

_PROBE = """
import ctypes, resource, sys
import research  # applies the settings when RESEARCH_RETAIN_FREED_MEMORY=1
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size = 256 << 20

def touch_and_free():
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)

touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_touch_page_faults(retain: bool) -> int:
  env = dict(os.environ, **{host_memory.ENV_VAR: "1" if retain else "0"})
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
  return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_block_is_reused_without_page_faults():
  pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
  if not _transparent_huge_pages_always():
    # glibc's default: a 256 MiB block is a fresh mmap each time, every page faulted in again.
    assert _second_touch_page_faults(retain=False) > pages // 2
  assert _second_touch_page_faults(retain=True) < pages // 100


def _transparent_huge_pages_always() -> bool:
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      return "[always]" in f.read()
  except OSError:
    return False


def test_off_unless_asked_for(monkeypatch):
  monkeypatch.delenv(host_memory.ENV_VAR, raising=False)
  assert host_memory.retain_freed_memory() is False
  monkeypatch.setenv(host_memory.ENV_VAR, "0")
  assert host_memory.retain_freed_memory() is False
