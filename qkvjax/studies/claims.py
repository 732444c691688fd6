"""``--exp=claims``: run every claim experiment, then one combined report.

Each experiment runs with its own default config into its usual
``results/<exp>/<run_id>/``; the combined ``results/claims/<run_id>/`` holds
``summary.json`` and ``report.md``: claim -> experiment -> effect with 95% CI
and seed count -> verdict, each linked to its experiment's report and figures.
"""

from __future__ import annotations

import importlib
import os
import pathlib
from typing import Any

from qkvjax import config as config_lib
from qkvjax import report
from qkvjax import results
from qkvjax import runner
from qkvjax.config import ConfigError

NOT_CLAIMS = ("claims", "figures")


def experiment_names(config) -> list[str]:
  names = [n.strip() for n in config.experiments.split(",") if n.strip()]
  accepted = [n for n in config_lib.available_experiments() if n not in NOT_CLAIMS]
  bad = [n for n in names if n not in accepted]
  if not names or bad:
    raise ConfigError(f"--config.experiments={config.experiments!r} names "
                      f"{', '.join(map(repr, bad)) or 'no experiment'}; accepted: a "
                      f"comma-separated list of {', '.join(accepted)}")
  return names


def check(config, results_dir) -> None:
  for name in experiment_names(config):
    module = importlib.import_module(f"qkvjax.studies.{name}")
    module.check(config_lib.load_config(name), results_dir)
  results.check_writable(results_dir)


def run(config, results_dir, progress: bool = True) -> pathlib.Path:
  names = experiment_names(config)
  run_dir = runner.start_run(results_dir, "claims", config)
  runs = {}
  for name in names:
    module = importlib.import_module(f"qkvjax.studies.{name}")
    print(f"== {name}", flush=True)
    runs[name] = str(module.run(config_lib.load_config(name), results_dir, progress=progress))
    results.write_json(run_dir / "runs.json", runs)  # progress survives a crash
  finish(run_dir)
  return run_dir


def collect(runs: dict[str, str]) -> list[dict[str, Any]]:
  """Every claim of every experiment run, tagged with its experiment."""
  rows = []
  for name, exp_dir in runs.items():
    summary = results.read_json(pathlib.Path(exp_dir) / "summary.json")
    for claim in summary.get("claims", []):
      rows.append({"experiment": name, "run_dir": exp_dir, **claim})
  return rows


def finish(run_dir: pathlib.Path) -> None:
  runs = results.read_json(run_dir / "runs.json")
  rows = collect(runs)
  counts: dict[str, int] = {}
  for r in rows:
    counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
  results.write_json(run_dir / "summary.json", {"runs": runs, "verdict_counts": counts,
                                                "claims": rows})
  lines = ["# qkvjax: every claim, measured", "",
           "Each claim of the attention explainers (`../shared/seeds/`) was tested by "
           "its own experiment, seeds trained together in one vmapped program. Effects "
           "are mean ± std across seeds with a 95% expanded-percentile bootstrap CI of the mean; "
           "*supported* / *not supported* when the CI lies on the claimed / the other "
           "side, *inconclusive* when it straddles.", "",
           "Verdicts: " + ", ".join(f"{v}: {n}" for v, n in sorted(counts.items())), "",
           "| claim | experiment | measured | effect: mean ± std (95% CI) | seeds | verdict |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    rel = os.path.relpath(pathlib.Path(r["run_dir"]), run_dir)
    lines.append(f"| {report.cell(r['claim'])} | [{r['experiment']}]({rel}/report.md) | "
                 f"{report.cell(r['measured'])} | "
                 f"{report.effect_cell(r['effect'])} | {r['effect']['n']} | "
                 f"**{r['verdict']}** |")
  lines += ["", "## Figures by experiment", ""]
  for name, exp_dir in runs.items():
    rel = os.path.relpath(pathlib.Path(exp_dir), run_dir)
    pngs = sorted(p.name for p in pathlib.Path(exp_dir).glob("*.png"))
    lines.append(f"- **{name}** ([report]({rel}/report.md)): "
                 + ", ".join(f"[{p[:-4]}]({rel}/{p})" for p in pngs))
  lines.append("")
  results.write_atomic(run_dir / "report.md", "\n".join(lines))
