"""The core imports no task, model or dataset builder (not even inside a function), and library code
touches absl's flag state in one documented place only."""
import ast
import pathlib

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
