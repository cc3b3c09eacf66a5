"""The console entry points (research.cli.launch): every command imported with the cyclic garbage
collector paused, the collector resumed afterwards."""
import gc
import importlib
import importlib.util
import os
import sys

import pytest

from research.cli import launch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def restored_gc():
  """Leaves the collector as the test found it: enabled, nothing frozen by the test."""
  enabled, threshold = gc.isenabled(), gc.get_threshold()
  yield
  gc.unfreeze()
  gc.set_threshold(*threshold)
  (gc.enable if enabled else gc.disable)()


def test_every_console_script_runs_its_command_through_the_launcher():
  tomllib = pytest.importorskip("tomllib")  # Python 3.11+
  with open(os.path.join(_ROOT, "pyproject.toml"), "rb") as f:
    scripts = tomllib.load(f)["project"]["scripts"]
  assert len(scripts) >= 11
  for script, target in scripts.items():
    module, function = target.split(":")
    assert module == "research.cli.launch", script
    command = getattr(launch, function)
    assert command.__name__ == function
    spec = importlib.util.find_spec(f"research.cli.{function}")  # not imported: their absl flags clash
    with open(spec.origin) as f:
      assert "\ndef run(" in f.read(), script


def test_import_paused_imports_without_collections_then_resumes_them(tmp_path, monkeypatch, restored_gc):
  (tmp_path / "probe_module.py").write_text(
      "import gc\nENABLED_DURING_IMPORT = gc.isenabled()\nCYCLE = []\nCYCLE.append(CYCLE)\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  gc.enable()
  frozen_before = gc.get_freeze_count()
  module = launch.import_paused("probe_module")
  assert module.ENABLED_DURING_IMPORT is False
  assert gc.isenabled()
  assert gc.get_freeze_count() > frozen_before  # what the import created is frozen
  assert not any(obj is module.CYCLE for obj in gc.get_objects())  # frozen objects are not tracked
  del sys.modules["probe_module"]


def test_import_paused_resumes_the_collector_when_the_import_fails(tmp_path, monkeypatch, restored_gc):
  (tmp_path / "broken_module.py").write_text("raise RuntimeError('broken')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  gc.enable()
  with pytest.raises(RuntimeError, match="broken"):
    launch.import_paused("broken_module")
  assert gc.isenabled()
  gc.disable()  # a caller that had the collector off keeps it off
  (tmp_path / "quiet_module.py").write_text("X = 1\n")
  launch.import_paused("quiet_module")
  assert not gc.isenabled()


def test_a_command_runs_with_the_raised_young_generation_threshold(monkeypatch, restored_gc):
  seen = {}

  class FakeCommand:
    @staticmethod
    def run():
      seen["threshold"], seen["enabled"] = gc.get_threshold(), gc.isenabled()

  imported = []
  monkeypatch.setattr(launch, "import_paused", lambda module: imported.append(module) or FakeCommand)
  gc.enable()
  older = gc.get_threshold()[1:]
  launch.train()
  assert imported == ["research.cli.train"]
  assert seen == {"threshold": (launch.YOUNG_THRESHOLD, *older), "enabled": True}
