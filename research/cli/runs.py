"""The runs under a folder, one line each:  research-runs [DIR] [--json] | --compare A B

DIR (default `runs`) is searched recursively (sweep trials included) for workdirs. Each line:
name, task, model, dataset, state (running / finished / failed / preempted / nan: "running" from
the workdir's lock and heartbeat, the others as the trainer recorded them; a run whose process
died is "failed" with "killed"), step / total, last and best eval headline metric, wall time,
last checkpoint. `--json` prints the same as a JSON list. `--compare A B` prints two runs' config
differences and final metrics side by side.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from absl import flags

from research.cli.app import run_app
from research.core import workdir as workdir_lib
from research.core.metrics import eval_records
from research.core.errors import ConfigError
from research.sweeps.experiment import metric_goal

_JSON = flags.DEFINE_bool("json", False, "Print a JSON list instead of a table.")
_COMPARE = flags.DEFINE_bool("compare", False, "Compare the two runs given as arguments.")


def headline(keys: List[str]) -> Optional[str]:
  """The headline eval metric among `keys`: the least nested name, a non-loss one if any
  ('eval/accuracy', a multi-task run's 'eval/detection/mAP')."""
  evals = [k for k in keys if k.startswith("eval/")]
  if not evals:
    return None
  depth = min(k.count("/") for k in evals)
  top = [k for k in evals if k.count("/") == depth]
  return next((k for k in top if metric_goal(k) == "max"), top[0])


def _number(value: Any) -> Optional[float]:
  return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def describe(workdir: str, root: str) -> Dict[str, Any]:
  """One run's summary (the fields of a `research-runs` line)."""
  config = workdir_lib.read_json(os.path.join(workdir, "config.json")) or {}
  status = workdir_lib.run_status(workdir)
  history = eval_records(workdir)
  metric = headline(list(history[-1])) if history else None
  values = [(r["step"], _number(r.get(metric))) for r in history if _number(r.get(metric)) is not None]
  best = None
  if values:
    pick = max if metric_goal(metric) == "max" else min
    best = pick(values, key=lambda sv: sv[1])
  name = os.path.relpath(workdir, root)
  return {
      "name": os.path.basename(os.path.abspath(root)) if name == "." else name,
      "workdir": os.path.abspath(workdir),
      "task": config.get("task", {}).get("name"), "model": config.get("model", {}).get("name"),
      "dataset": config.get("dataset", {}).get("name"),
      "state": status.get("state"), "error": status.get("error"),
      "step": status.get("step"), "num_steps": status.get("num_steps"),
      "metric": metric, "last": values[-1][1] if values else None,
      "last_step": values[-1][0] if values else None,
      "best": best[1] if best else None, "best_step": best[0] if best else None,
      "wall_seconds": status.get("wall_seconds"), "last_checkpoint": status.get("last_checkpoint"),
  }


def _wall(seconds: Optional[float]) -> str:
  if seconds is None:
    return "-"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _fmt(value: Optional[float]) -> str:
  return "-" if value is None else f"{value:.4g}"


def table(rows: List[Dict[str, Any]]) -> str:
  """The runs as an aligned text table."""
  header = ("name", "task", "model", "dataset", "state", "step", "metric", "last", "best", "wall", "ckpt")
  lines = [header]
  for r in rows:
    state = r["state"] + (" (killed)" if r["state"] == "failed" and (r["error"] or "").startswith("killed") else "")
    state = "stopped on NaN" if r["state"] == "nan" else state
    step = f"{r['step']}/{r['num_steps']}" if r["step"] is not None else "-"
    lines.append((r["name"], r["task"] or "-", r["model"] or "-", r["dataset"] or "-", state, step,
                  (r["metric"] or "-").removeprefix("eval/"), _fmt(r["last"]), _fmt(r["best"]),
                  _wall(r["wall_seconds"]),
                  "-" if r["last_checkpoint"] is None else str(r["last_checkpoint"])))
  widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
  return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _final_metrics(workdir: str) -> Dict[str, Any]:
  results = workdir_lib.read_json(os.path.join(workdir, "results.json"))
  if results:
    return {k: v for k, v in results.items() if k != "step"}
  history = eval_records(workdir)
  return {k: v for k, v in history[-1].items() if k.startswith("eval/")} if history else {}


def compare(a: str, b: str) -> str:
  """Two runs' config differences and final metrics (the headline ones, not per-class
  breakdowns), side by side."""
  for w in (a, b):
    if not os.path.exists(os.path.join(w, "config.json")):
      raise ConfigError(f"{w} is not a training run (no config.json)")
  flat = [workdir_lib.flatten(workdir_lib.read_json(os.path.join(w, "config.json"))) for w in (a, b)]
  rows: List[Tuple[str, str, str]] = [("", os.path.basename(os.path.abspath(a)), os.path.basename(os.path.abspath(b)))]
  for key in sorted(set(flat[0]) | set(flat[1])):
    va, vb = (json.dumps(f[key]) if key in f else "(absent)" for f in flat)
    if va != vb:
      rows.append((key, va, vb))
  if len(rows) == 1:
    rows.append(("(configs are identical)", "", ""))
  metrics = [_final_metrics(w) for w in (a, b)]
  rows.append(("", "", ""))
  rows.append(("final metrics", "", ""))
  for key in sorted(k for k in set(metrics[0]) | set(metrics[1]) if k.count("/") <= 1):
    rows.append((key, *(_fmt(_number(m.get(key))) if key in m else "-" for m in metrics)))
  widths = [max(len(r[i]) for r in rows) for i in range(3)]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main(argv: List[str]) -> None:
  args = argv[1:]
  if _COMPARE.value:
    if len(args) != 2:
      raise ConfigError(f"--compare takes two workdirs, got {len(args)}: research-runs --compare A B")
    print(compare(*args))
    return
  if len(args) > 1:
    raise ConfigError(f"research-runs takes one folder, got {len(args)}: {' '.join(args)}")
  root = args[0] if args else "runs"
  if not os.path.isdir(root):
    raise ConfigError(f"no folder {root!r}: name the folder that holds the runs (research-runs DIR)")
  rows = [describe(w, root) for w in workdir_lib.find_runs(root)]
  if _JSON.value:
    print(json.dumps(rows, indent=1))
  elif rows:
    print(table(rows))
  else:
    print(f"no runs under {root}")


def run() -> None:
  """Console entry point."""
  run_app(main)


if __name__ == "__main__":
  run()
