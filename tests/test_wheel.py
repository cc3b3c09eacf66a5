"""The installed package works without the source tree: a wheel of the tree, installed non-editable
into a fresh virtual environment (sharing this environment's packages, nothing downloaded), trains a
shipped config by name and runs a shipped experiment's sweep from an empty folder."""
import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# What a wheel is built from (research/configs and research/experiments link to the top-level folders).
SOURCES = ("pyproject.toml", "README.md", "research", "configs", "experiments")


def _run(command, cwd, env, timeout=600):
  done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)
  assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
  return done.stdout


def test_wheel_installs_and_trains_and_sweeps_from_an_empty_folder(tmp_path, data_dir):
  pytest.importorskip("setuptools", reason="building the wheel without downloads needs setuptools installed")
  tree = tmp_path / "tree"  # a copy, so the build leaves nothing in the checkout
  tree.mkdir()
  for name in SOURCES:
    source = ROOT / name
    if source.is_dir():
      shutil.copytree(source, tree / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy2(source, tree / name)
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  env.update(JAX_PLATFORMS="cpu", TFDS_DATA_DIR=data_dir, PIP_NO_INDEX="1", XLA_FLAGS="")  # one device
  _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
        tree], tmp_path, env)
  wheel, = (tmp_path / "dist").glob("research-*.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  assert {"research/configs/lenet5_digits.py", "research/experiments/lenet5_digits_lr_seed.py",
          "research/models/native/cpu_kernels.cc", "research/data/native/resize.cc"} <= names
  assert len([n for n in names if n.startswith("research/configs/")]) == len(list((ROOT / "configs").glob("*.py")))

  venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False, symlinks=True)
  bin_dir = tmp_path / "venv" / "bin"
  # --system-site-packages reaches the base interpreter's packages; when the tests themselves run in a
  # virtual environment, a .pth file adds its site-packages (after the new environment's own).
  purelib = _run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
  pathlib.Path(purelib.strip(), "_test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
  _run([sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "-q", "--no-deps",
        "--no-build-isolation", wheel], tmp_path, env)
  empty = tmp_path / "empty"
  empty.mkdir()
  location = _run([bin_dir / "python", "-c", "import research; print(research.__file__)"], empty, env)
  assert location.strip().startswith(str(tmp_path / "venv")), location  # the wheel, not a checkout

  _run([bin_dir / "research-train", "--config", "lenet5_digits", "--workdir", "run",
        "--config.num_train_steps=2", "--config.log_every_steps=1", "--config.eval_every_steps=0"], empty, env)
  assert json.loads((empty / "run" / "results.json").read_text())["step"] == 2

  out = _run([bin_dir / "research-sweep", "lenet5_digits_lr_seed", "--seeds=0", "--sweep_dir=sweep", "--parallel=2",
              "--set=num_train_steps=2", "--set=log_every_steps=1", "--set=eval_every_steps=0",
              "--set=checkpoint_every_steps=2"], empty, env)
  results = sorted((empty / "sweep" / "trials").glob("*/results.json"))
  assert len(results) == 2, out  # the two learning rates, one seed
  assert all(json.loads(r.read_text())["step"] == 2 for r in results)
  # Nothing written outside the folder asked for (.jax_cache: the runs' compilation cache).
  assert sorted(p.name for p in empty.iterdir() if p.name != ".jax_cache") == ["run", "sweep"]
