"""The core imports no task, model or dataset builder (not even inside a function), and library code
touches absl's flag state in one documented place only."""
import ast
import pathlib

import numpy as np
import pytest

RESEARCH = pathlib.Path(__file__).resolve().parent.parent / "research"
FORBIDDEN = ("research.tasks", "research.models", "research.data.builders")


def _imports(path: pathlib.Path):
  """(line, module) of every import statement in the file, at any depth, plus importlib calls."""
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      yield from ((node.lineno, alias.name) for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.lineno, node.module
      yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    elif isinstance(node, ast.Call) and isinstance(node.args[0] if node.args else None, ast.Constant):
      func = node.func
      name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
      if name in ("import_module", "__import__"):
        yield node.lineno, str(node.args[0].value)


def _offending(source_dir: pathlib.Path):
  return [f"{p.relative_to(source_dir)}:{line} imports {module}"
          for p in sorted(source_dir.rglob("*.py")) for line, module in _imports(p)
          if any(module == f or module.startswith(f + ".") for f in FORBIDDEN)]


def test_core_imports_no_task_model_or_dataset_builder():
  assert sorted(p.name for p in (RESEARCH / "core").glob("*.py"))  # the folder is where we look
  assert _offending(RESEARCH / "core") == []


def test_the_check_sees_imports_inside_functions(tmp_path):
  (tmp_path / "m.py").write_text("def f():\n  import research.tasks\n  from research.models import conv\n"
                                 "  importlib.import_module('research.data.builders.digits')\n")
  assert len(_offending(tmp_path)) == 4


@pytest.mark.parametrize("needle", ["FLAGS.mark_as_parsed", "FLAGS("])
def test_library_code_touches_absl_flag_state_in_one_place(needle):
  """Outside the commands (research/cli), only the input pipeline marks absl's flags parsed (Grain's
  worker processes read them; research/data/pipeline.py says why)."""
  hits = [str(p.relative_to(RESEARCH)) for p in sorted(RESEARCH.rglob("*.py"))
          if "cli" not in p.relative_to(RESEARCH).parts and needle in p.read_text()]
  assert hits == (["data/pipeline.py"] if needle == "FLAGS.mark_as_parsed" else [])


def test_metric_writer_does_not_import_torch(tmp_path):
  """tensorboardX imports torch when it is installed (seconds of a run's start-up); the writer
  loads it without, and torch still imports normally afterwards."""
  import subprocess
  import sys
  code = ("import sys\nfrom research.core.metrics import MetricWriter\nimport numpy as np\n"
          f"w = MetricWriter({str(tmp_path)!r})\nw.write_scalars(1, {{'a': 1.0}})\n"
          "w.write_histograms(1, {'h': np.arange(5.0)})\nw.close()\nassert 'torch' not in sys.modules\n"
          "import importlib.util\nif importlib.util.find_spec('torch'):\n  import torch\n  assert torch.zeros(1).shape == (1,)\n")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=240)
  assert list((tmp_path / "tensorboard").iterdir())


def test_train_command_imports_grain_and_orbax_on_first_use(tmp_path):
  """research-train's start-up imports neither grain nor orbax (0.3-0.5 s; grain imports orbax):
  a run without checkpoints imports them in threads while its train step compiles. A Checkpointer
  over an empty folder answers `latest_step` without orbax, and opens it when asked."""
  import subprocess
  import sys
  code = ("import sys\nimport research.cli.train\n"
          "assert not [m for m in sys.modules if m.split('.')[0] in ('grain', 'orbax')], 'imported at start-up'\n"
          "from research.core.checkpoint import Checkpointer\n"
          f"c = Checkpointer({str(tmp_path / 'checkpoints')!r})\n"
          "assert c.latest_step() is None and 'orbax' not in sys.modules\n"
          "assert c.manager.latest_step() is None and 'orbax.checkpoint' in sys.modules\nc.close()\n")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=240)


def test_cpu_prefetch_yields_the_numpy_batches_the_step_places_itself():
  """One process on CPU devices: `prefetch_to_device` hands the host batches on as numpy arrays
  (no transfer to overlap); the jitted step shards them as its in_shardings say."""
  import jax
  from research.core import parallel
  mesh = parallel.make_mesh()
  batches = [{"x": np.arange(16, dtype=np.float32).reshape(8, 2) + i, "y": np.full(8, i)} for i in range(3)]
  out = list(parallel.prefetch_to_device(iter(batches), mesh))
  assert len(out) == 3 and all(isinstance(b["x"], np.ndarray) for b in out)
  step = jax.jit(lambda b: b["x"].sum(axis=1) + b["y"], in_shardings=(parallel.batch_sharded(mesh),))
  for got, want in zip(out, batches):
    np.testing.assert_array_equal(np.asarray(step(got)), want["x"].sum(axis=1) + want["y"])
