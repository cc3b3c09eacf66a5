"""research-benchmark end to end on a small LeNet-5: the step-only timing, a profile, then the
step fed by the input pipeline (which continues from the state the profiled steps left); a
command-line compiler option the config does not set."""
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_with_profile_then_input_pipeline(data_dir, tmp_path):
  trace_dir = str(tmp_path / "trace")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([ROOT] + sys.path))
  done = subprocess.run(
      [sys.executable, "-m", "research.cli.benchmark", "--config", "lenet5_digits", "--steps", "2", "--warmup", "1",
       "--rounds", "1", "--torch=false", "--trace_dir", trace_dir, "--trace_steps", "1",
       f"--config.dataset.data_dir={data_dir}", "--config.batch_size=32", "--config.compilation_cache_dir=",
       "--config.compiler_options.research_no_such_option=true"],
      capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "step only (device-resident batch)" in done.stdout
  assert "with input pipeline" in done.stdout, done.stdout
  assert glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.xplane.pb"))
  # A compiler option the config file does not set reaches the compile (this one is unknown to XLA,
  # so it is dropped with a warning).
  assert "compiler option research_no_such_option=True is unknown" in done.stderr
