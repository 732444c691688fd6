"""Sweeps: a grid over any config fields, one run directory per point.

``--sweep.FIELD=V1,V2,...`` (repeatable; the grid is the cartesian product)
or a config's ``get_sweep()`` define the grid. Every point is an ordinary run
directory under ``results/<exp>/<sweep_id>/``; points that differ only in
foldable values (``train.FOLDABLE``) train together in one vmapped program
(``runner.plan``). ``sweep.json`` records the grid, each point's overrides,
directory and status; the sweep's own ``summary.json`` and ``report.md`` put
every claim's effect with its CI against the swept values.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections
import numpy as np

from qkvjax import config as config_lib
from qkvjax import plotting
from qkvjax import report
from qkvjax import results
from qkvjax import rundir
from qkvjax import stats

Grid = dict[str, tuple]


def parse(config: ml_collections.ConfigDict, texts: dict[str, str]) -> Grid:
  """``{field: "v1,v2"}`` as typed tuples; ConfigError for an unknown field,
  an empty or repeated list, or a value of the wrong type."""
  grid = {}
  for path, text in texts.items():
    current = config_lib.field(config, path)
    if isinstance(current, ml_collections.ConfigDict):
      raise config_lib.ConfigError(f"--sweep.{path} is a group; sweep one of its fields: "
                                   f"{', '.join(sorted(current.keys()))}")
    if isinstance(current, tuple):
      raise config_lib.ConfigError(f"--sweep.{path}: a list field cannot be swept; "
                                   "accepted: a field holding one value")
    grid[path] = config_lib.parse_list(f"--sweep.{path}", text, type(current))
  return grid


def validate(config: ml_collections.ConfigDict, grid: Grid) -> None:
  """Every value of every field must fit the field (ConfigError otherwise)."""
  for path, values in grid.items():
    current = config_lib.field(config, path)
    for v in values:
      if type(v) is not type(current) and not (type(current) is float and type(v) is int):
        raise config_lib.ConfigError(
            f"sweep value {v!r} of {path!r} is not a {type(current).__name__}; accepted: "
            f"values of the field's type")
    if not values or len(set(values)) != len(values):
      raise config_lib.ConfigError(f"sweep of {path!r}={values!r}: accepted: distinct values")


def points(grid: Grid) -> list[dict[str, Any]]:
  """The cartesian product, first field slowest."""
  fields = list(grid)
  return [dict(zip(fields, combo)) for combo in itertools.product(*grid.values())]


def point_name(i: int, point: dict[str, Any]) -> str:
  text = ",".join(f"{k.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, float) else
                  f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())
  safe = "".join(c if c.isalnum() or c in "=,.-_" else "_" for c in text)
  return f"{i:03d}_{safe}"[:120]


def write_manifest(sweep_dir: rundir.RunDir, exp: str, config, grid: Grid,
                   units: list[dict[str, Any]], variant: str | None = None) -> None:
  """``sweep.json``; each point's status then follows its config.json
  (``RunDir.sync_points``)."""
  sweep_dir.write_json("sweep.json", {
      "experiment": exp, "variant": variant, "config": config.to_dict(),
      "grid": {k: list(v) for k, v in grid.items()}, "points": units})


# ---- the combined summary and report -------------------------------------------------
def collect(sweep_dir: rundir.RunDir) -> dict[str, Any]:
  """Every point's claims side by side, corrected across the whole sweep."""
  manifest = sweep_dir.read_json("sweep.json")
  entries = []
  for p in manifest["points"]:
    point = sweep_dir.point(p["name"])
    if not point.has("summary.json"):
      continue
    for c in point.read_json("summary.json")["claims"]:
      entries.append({**c, "point": p["name"], "values": p["overrides"],
                      "corrected_in_run": c["corrected_verdict"]})
  stats.correct(entries)
  return {"experiment": manifest["experiment"], "grid": manifest["grid"],
          "points": manifest["points"], "claims": entries}


def _axis_values(values: list) -> tuple[list, str]:
  """Where a swept field's values go on the x axis, and the axis scale: the
  numbers themselves (log scale when they are positive and span a factor of
  10 or more, as learning rates do), or their order for anything else."""
  numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
  if not numeric:
    return list(range(len(values))), "categories"
  positive = min(values) > 0
  if positive and max(values) / min(values) >= 10:
    return list(values), "log"
  return list(values), "linear"


def effect_figure(summary: dict[str, Any]):
  """Per claim (rows, titled with the claim) and swept field (columns):
  effect mean with its 95% CI against the field's values, one line per
  combination of the other fields."""
  import textwrap  # pylint: disable=g-import-not-at-top
  grid = summary["grid"]
  fields = list(grid)
  names = list(dict.fromkeys(c["claim"] for c in summary["claims"]))
  width = max(4.2, 3.8 * len(fields))
  fig, axes = plotting.plt.subplots(len(names), len(fields), squeeze=False,
                                    figsize=(width, 2.3 * len(names) + 1.0),
                                    layout="constrained")
  n_max = 0
  chars = int(width * 13 / len(fields))  # a title line's characters at 8 pt
  for row, name in enumerate(names):
    entries = [c for c in summary["claims"] if c["claim"] == name]
    for col, f in enumerate(fields):
      ax = axes[row][col]
      others = [g for g in fields if g != f]
      lines: dict[tuple, list] = {}
      for c in entries:
        lines.setdefault(tuple(c["values"][g] for g in others), []).append(c)
      xs_all, scale = _axis_values(list(grid[f]))
      where = dict(zip(grid[f], xs_all))
      for key, cs in sorted(lines.items(), key=lambda kv: str(kv[0])):
        cs = sorted(cs, key=lambda c: list(grid[f]).index(c["values"][f]))
        x = np.array([where[c["values"][f]] for c in cs], float)
        mean = np.array([np.nan if c["effect"]["mean"] is None else c["effect"]["mean"]
                         for c in cs])
        lo = np.array([c["effect"]["ci95"][0] if c["effect"]["ci95"] else np.nan for c in cs])
        hi = np.array([c["effect"]["ci95"][1] if c["effect"]["ci95"] else np.nan for c in cs])
        label = ", ".join(f"{g.rsplit('.', 1)[-1]}={v}" for g, v in zip(others, key)) or None
        ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="o-", ms=3, capsize=2,
                    label=label)
        n_max = max([n_max] + [c["effect"]["n"] for c in cs])
      if scale == "log":
        ax.set_xscale("log")
      ax.set_xticks(xs_all, [f"{v:g}" if isinstance(v, float) else str(v) for v in grid[f]],
                    fontsize=7)
      ax.minorticks_off()
      ax.axhline(0, color="0.5", ls=":", lw=1)
      ax.tick_params(axis="y", labelsize=7)
      ax.set_xlabel(f, fontsize=8)
      if col == 0:
        ax.set_ylabel("effect", fontsize=8)
      ax.set_title("\n".join(textwrap.wrap(name, chars)), fontsize=8, loc="left")
      if row == 0 and len(lines) > 1:
        ax.legend(frameon=False, fontsize=6)
  fig.suptitle("Each claim's effect (mean, 95% CI) against the swept values\n"
               f"error bars: 95% CI over up to {n_max} seeds per point", fontsize=9)
  return fig


def finish(sweep_dir) -> None:
  """The sweep's summary.json, figure and report.md, from the points' files."""
  sweep_dir = rundir.RunDir(sweep_dir)
  summary = collect(sweep_dir)
  results.write_json(sweep_dir / "summary.json", summary)
  figures = {}
  if summary["claims"] and plotting.FORMATS:
    figures["Effects against the swept values"] = plotting.save(
        effect_figure(summary), sweep_dir, "effects_vs_sweep")
  incomplete = [p["name"] for p in summary["points"] if p.get("status") != "complete"]
  lines = [f"# qkvjax sweep: {summary['experiment']}", ""]
  if incomplete:
    lines += [f"**INCOMPLETE SWEEP**: points not finished: {', '.join(incomplete)}.", ""]
  lines += ["Grid: " + "; ".join(f"`{k}` ∈ {v}" for k, v in summary["grid"].items())
            + f" ({len(summary['points'])} points, each its own run directory with its own "
            "report).", "", report.HOW_TO_READ, "",
            "Here the corrected column applies Holm–Bonferroni across every claim of every "
            "point of the sweep.", "", report.counts_line(summary["claims"]), ""]
  fields = list(summary["grid"])
  head = "| claim | " + " | ".join(f.rsplit(".", 1)[-1] for f in fields) + (
      " | effect: mean ± std (95% CI) | seeds | verdict | corrected |")
  lines += [head, "|" + "---|" * (head.count("|") - 1)]
  for c in sorted(summary["claims"], key=lambda c: c["claim"]):
    values = " | ".join(str(c["values"].get(f)) for f in fields)
    lines.append(f"| {report.cell(c['claim'])} | {values} | {report.effect_cell(c['effect'])} "
                 f"| {c['effect']['n']} | **{c['verdict']}** | **{c['corrected_verdict']}** |")
  lines += ["", "## Figures", ""] + report.figure_lines(figures)
  lines += ["## Points", ""] + [f"- [{p['name']}]({p['name']}/report.md): {p['overrides']} "
                                f"({p.get('status', '?')})" for p in summary["points"]]
  lines += ["", "Redraw: `python -m experiments.run --exp=figures "
            f"--config.run_dir={sweep_dir}`.", ""]
  results.write_atomic(sweep_dir / "report.md", "\n".join(lines))
