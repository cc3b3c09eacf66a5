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
  if host_memory._transparent_huge_pages() != "always":
    # glibc's default: a 256 MiB block is a fresh mmap each time, every page faulted in again.
    assert _second_touch_page_faults(retain=False) > pages // 2
  assert _second_touch_page_faults(retain=True) < pages // 100


def test_off_unless_asked_for(monkeypatch):
  monkeypatch.delenv(host_memory.ENV_VAR, raising=False)
  assert host_memory.retain_freed_memory() is False
  monkeypatch.setenv(host_memory.ENV_VAR, "0")
  assert host_memory.retain_freed_memory() is False


@pytest.mark.parametrize("argv, own", [
    (["python", "/venv/bin/research-train", "--config", "lenet5_digits"], True),
    (["python", "-m", "research.cli.benchmark", "--steps", "5"], True),
    (["python", "-u", "-X", "importtime", "-m", "research.cli.train"], True),
    (["python", "-m", "pytest", "tests"], False),
    (["python", "-c", "import research"], False),
    (["python", "my_script.py"], False),
    (["python"], False),
])
def test_own_commands_are_recognized(argv, own):
  assert host_memory.is_own_command(argv) is own


def _madvise_glibc(monkeypatch, version=(2, 36), mode="madvise"):
  monkeypatch.setattr(host_memory, "_glibc_version", lambda: version)
  monkeypatch.setattr(host_memory, "_transparent_huge_pages", lambda: mode)
  monkeypatch.setattr(platform, "system", lambda: "Linux")
  monkeypatch.delenv(host_memory.HUGE_PAGES_ENV_VAR, raising=False)
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)


def test_huge_page_tunable_is_added_where_it_changes_something(monkeypatch):
  _madvise_glibc(monkeypatch)
  assert host_memory.huge_page_tunables() == "glibc.malloc.hugetlb=1"
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
  assert host_memory.huge_page_tunables() == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")  # the user's choice stays
  assert host_memory.huge_page_tunables() is None
  monkeypatch.delenv("GLIBC_TUNABLES")
  monkeypatch.setenv(host_memory.HUGE_PAGES_ENV_VAR, "0")
  assert host_memory.huge_page_tunables() is None
  for version, mode in (((2, 34), "madvise"), ((2, 36), "always"), ((2, 36), "never"), (None, "madvise")):
    _madvise_glibc(monkeypatch, version, mode)
    assert host_memory.huge_page_tunables() is None


def test_own_command_restarts_once_with_the_tunable(monkeypatch):
  _madvise_glibc(monkeypatch)
  calls = []
  monkeypatch.setattr(host_memory.os, "execve", lambda path, args, env: calls.append((path, args, env)))
  monkeypatch.setattr(host_memory.sys, "orig_argv", ["python", "-m", "pytest", "-q"])
  host_memory.restart_with_huge_pages()
  assert calls == []  # not one of research's commands: this process is left alone
  monkeypatch.setattr(host_memory.sys, "orig_argv", ["/venv/bin/python", "/venv/bin/research-train", "--config", "x"])
  host_memory.restart_with_huge_pages()
  (path, args, env), = calls
  assert path == sys.executable and args == [sys.executable, "/venv/bin/research-train", "--config", "x"]
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  monkeypatch.setenv("GLIBC_TUNABLES", env["GLIBC_TUNABLES"])  # the restarted process: no second restart
  host_memory.restart_with_huge_pages()
  assert len(calls) == 1
