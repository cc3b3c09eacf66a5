"""A sweep's report: every trial's config differences and final metrics in one table (Markdown
and CSV), the best trial per metric, the mean over seeds, the baseline expected vs reached, and
plots (learning curves of all trials on one figure; final metric vs each hyperparameter) as PNG.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import statistics
from typing import Any, Dict, List, Optional, Sequence

from research.sweeps.experiment import Experiment, Trial, format_value, metric_goal
from research.sweeps.local import SweepDir, read_results
from research.sweeps.tensorboard import write_hparams


@dataclasses.dataclass
class Row:
  """One trial: its status, final scalar metrics, wall time and logged history."""

  trial: Trial
  status: str
  workdir: str
  metrics: Dict[str, float]
  seconds: Optional[float]
  history: List[Dict[str, Any]]


def _history(workdir: str) -> List[Dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip().endswith("}")]


def collect(sweep: SweepDir) -> List[Row]:
  """Every trial registered in the sweep directory, with what its workdir holds."""
  seconds = {e["trial"]: e["seconds"] for e in sweep.events() if e["event"] == "done"}
  rows = []
  for trial in sweep.trials():
    workdir = sweep.workdir(trial)
    history = _history(workdir)
    metrics: Dict[str, float] = {}
    train_loss = [r["train/loss"] for r in history if isinstance(r.get("train/loss"), float)]
    if train_loss:
      metrics["train/loss"] = train_loss[-1]
    results = read_results(workdir) or {}
    metrics.update({k: float(v) for k, v in results.items()
                    if k.count("/") == 1 and isinstance(v, (int, float))})
    if "step" in results or history:
      metrics["step"] = results.get("step", history[-1]["step"] if history else 0)
    rows.append(Row(trial, sweep.status(trial), workdir, metrics, seconds.get(trial.id), history))
  return rows


def varying_fields(rows: Sequence[Row]) -> List[str]:
  """Override fields whose value differs between trials (swept fields first)."""
  fields: List[str] = []
  for row in rows:
    for key in list(row.trial.swept) + list(row.trial.overrides):
      if key not in fields:
        fields.append(key)
  return [f for f in fields if len({repr(r.trial.overrides.get(f)) for r in rows}) > 1]


def metric_names(rows: Sequence[Row], main: str) -> List[str]:
  names = sorted({k for r in rows for k in r.metrics if k != "step"})
  return ([main] if main in names else []) + [n for n in names if n != main]


def best_per_metric(rows: Sequence[Row], metrics: Sequence[str]) -> List[tuple]:
  """(metric, goal, best value, trial name) for each metric some finished trial reports."""
  out = []
  for metric in metrics:
    done = [r for r in rows if r.status == "done" and metric in r.metrics]
    if done:
      goal = metric_goal(metric)
      pick = (max if goal == "max" else min)(done, key=lambda r: r.metrics[metric])
      out.append((metric, goal, pick.metrics[metric], pick.trial.name))
  return out


def seed_groups(rows: Sequence[Row]) -> Dict[str, List[Row]]:
  """Finished trials grouped by their overrides apart from the seed."""
  groups: Dict[str, List[Row]] = {}
  for row in rows:
    if row.status == "done":
      key = ", ".join(f"{k}={format_value(v)}" for k, v in row.trial.swept.items() if k != "seed")
      groups.setdefault(key, []).append(row)
  return groups


def _mean_std(values: Sequence[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> List[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def markdown(experiment: Experiment, rows: Sequence[Row], plots: Sequence[str] = ()) -> str:
  """The report as Markdown; `plots` are image paths relative to where the file is written."""
  fields = varying_fields(rows)
  metrics = metric_names(rows, experiment.metric)
  common = {k: v for k, v in (rows[0].trial.overrides.items() if rows else ()) if k not in fields}
  counts: Dict[str, int] = {}
  for row in rows:
    counts[row.status] = counts.get(row.status, 0) + 1
  lines = [f"# Sweep {experiment.name}", ""]
  if experiment.description:
    lines += [experiment.description, ""]
  lines += [f"Config `{experiment.config}`; {len(rows)} trials ("
           + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")."]
  if common:
    lines += ["", "Common overrides: " + ", ".join(f"`{k}={format_value(v)}`" for k, v in common.items())]
  short = [f.rsplit(".", 1)[-1] for f in fields]
  body = []
  for row in rows:
    cells = [row.trial.name, row.status] + [format_value(row.trial.overrides.get(f, "")) for f in fields]
    cells.append(str(row.metrics.get("step", "")))
    cells += [f"{row.metrics[m]:.4f}" if m in row.metrics else "" for m in metrics]
    cells.append(f"{row.seconds:.0f}" if row.seconds is not None else "")
    body.append(cells)
  lines += [""] + _table(["trial", "status"] + short + ["step"] + metrics + ["time (s)"], body)
  best = best_per_metric(rows, metrics)
  if best:
    lines += ["", "Best per metric:", ""] + _table(
        ["metric", "goal", "best", "trial"],
        [[m, g, f"{v:.4f}", name] for m, g, v, name in best])
  groups = seed_groups(rows)
  if any(len(g) > 1 for g in groups.values()):
    lines += ["", "Mean ± standard deviation over seeds:", ""] + _table(
        ["configuration", "seeds"] + metrics,
        [[key or "(base)", str(len(g))] + [_mean_std([r.metrics[m] for r in g if m in r.metrics])
                                          if any(m in r.metrics for r in g) else "" for m in metrics]
         for key, g in groups.items()])
  if experiment.baseline is not None:
    lines += ["", *baseline_lines(experiment, rows)]
  if plots:
    lines += [""] + [f"![{os.path.splitext(os.path.basename(p))[0]}]({p})" for p in plots]
  return "\n".join(lines) + "\n"


def baseline_lines(experiment: Experiment, rows: Sequence[Row]) -> List[str]:
  """Expected (from the source) vs reached (mean over finished trials) for the baseline metric."""
  b = experiment.baseline
  values = [r.metrics[b.metric] for r in rows if r.status == "done" and b.metric in r.metrics]
  expected = f"{b.expected:.4f}" + (f" ({b.note})" if b.note else "")
  if not values:
    reached, best, verdict = "", "", "no finished trial"
  else:
    mean = statistics.fmean(values)
    goal = metric_goal(b.metric)
    ok = mean >= b.expected - b.tolerance if goal == "max" else mean <= b.expected + b.tolerance
    reached = f"{_mean_std(values)} ({len(values)} trials)"
    best = f"{(max if goal == 'max' else min)(values):.4f}"
    verdict = "reproduced" if ok else "not reproduced"
  return ["Baseline:", ""] + _table(
      ["metric", "expected", "tolerance", "reached", "best", "verdict", "source"],
      [[b.metric, expected, f"{b.tolerance:.4f}", reached, best, verdict, b.source]])


def write_csv(path: str, rows: Sequence[Row], metric: str, sweep_path: str) -> None:
  """One line per trial: id, name, status, workdir (relative to the sweep directory), every
  override, every final metric."""
  fields: List[str] = []
  for row in rows:
    fields += [k for k in row.trial.overrides if k not in fields]
  metrics = metric_names(rows, metric)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "name", "status", "workdir", "seconds", *fields, "step", *metrics])
    for r in rows:
      writer.writerow([r.trial.id, r.trial.name, r.status, os.path.relpath(r.workdir, sweep_path),
                       "" if r.seconds is None else f"{r.seconds:.1f}",
                       *[format_value(r.trial.overrides[f]) if f in r.trial.overrides else ""
                         for f in fields],
                       r.metrics.get("step", ""), *[r.metrics.get(m, "") for m in metrics]])


def plot_curves(path: str, rows: Sequence[Row], metric: str) -> bool:
  """Training loss and `metric` against the step, one line per trial; False if nothing logged."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys = ["train/loss", metric]
  if not any(k in rec for r in rows for rec in r.history for k in keys):
    return False
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for i, row in enumerate(rows):
    label = row.trial.name.rsplit("-", 1)[0]
    for ax, key in zip(axes, keys):
      points = [(rec["step"], rec[key]) for rec in row.history if isinstance(rec.get(key), float)]
      if points:
        ax.plot(*zip(*points), marker="o" if len(points) < 8 else None, markersize=3,
                color=f"C{i % 10}", label=label)
  for ax, key in zip(axes, keys):
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
  axes[0].set_yscale("log")
  axes[1].legend(fontsize=7)
  fig.suptitle("learning curves")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def plot_vs_hparams(path: str, rows: Sequence[Row], metric: str) -> bool:
  """The final `metric` against each varying hyperparameter (seed excluded), trials as points and
  the mean per value as a line; False if there is nothing to plot."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  done = [r for r in rows if r.status == "done" and metric in r.metrics]
  fields = [f for f in varying_fields(done) if f != "seed"]
  if not done or not fields:
    return False
  fig, axes = plt.subplots(1, len(fields), figsize=(4.5 * len(fields), 3.8), squeeze=False)
  for ax, field in zip(axes[0], fields):
    xs = [r.trial.overrides.get(field) for r in done]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    xs = xs if numeric else [format_value(x) for x in xs]
    ys = [r.metrics[metric] for r in done]
    ax.scatter(xs, ys, color="C0", alpha=0.7, label="trials")
    means = {x: statistics.fmean([y for xx, y in zip(xs, ys) if xx == x]) for x in xs}
    order = sorted(means) if numeric else list(means)
    ax.plot(order, [means[x] for x in order], color="C1", marker="s", label="mean")
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
      ax.set_xscale("log")
    ax.set_xlabel(field)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def write_report(experiment: Experiment, sweep: SweepDir,
                 out_dir: Optional[str] = None) -> Dict[str, str]:
  """Writes report.md, report.csv, curves.png and hparams.png (when there is something to plot)
  to `out_dir` (default: the sweep directory); returns {kind: path}."""
  out_dir = os.path.abspath(out_dir or sweep.path)
  os.makedirs(out_dir, exist_ok=True)
  rows = collect(sweep)
  for row in rows:  # TensorBoard's HParams tab (trials run by SLURM never passed the local runner)
    results = read_results(row.workdir)
    if results is not None:
      write_hparams(row.workdir, row.trial.swept, results)
  paths = {"csv": os.path.join(out_dir, "report.csv")}
  write_csv(paths["csv"], rows, experiment.metric, sweep.path)
  plots = []
  for kind, plot in (("curves", plot_curves), ("hparams", plot_vs_hparams)):
    path = os.path.join(out_dir, f"{kind}.png")
    if plot(path, rows, experiment.metric):
      paths[kind] = path
      plots.append(os.path.basename(path))
  paths["markdown"] = os.path.join(out_dir, "report.md")
  with open(paths["markdown"], "w") as f:
    f.write(markdown(experiment, rows, plots))
  return paths

