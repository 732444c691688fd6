"""``--exp=claims``: run every claim experiment, then one combined report.

Each experiment runs with its own default config into its usual
``results/<exp>/<run_id>/``; the combined ``results/claims/<run_id>/`` holds
``summary.json`` and ``report.md``: claim -> experiment -> effect with 95% CI
and seed count -> verdict, corrected for multiple comparisons across the
whole table (Holm–Bonferroni), each linked to its experiment's report.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from qkvjax import config as config_lib
from qkvjax import registry
from qkvjax import report
from qkvjax import results
from qkvjax import rundir
from qkvjax import stats
from qkvjax import study as study_lib
from qkvjax import train

NOT_CLAIMS = ("claims", "figures", "pretrained")  # pretrained: analyses a given checkpoint


def experiment_names(config) -> list[str]:
  accepted = [n for n in registry.available_experiments() if n not in NOT_CLAIMS]
  return list(config_lib.require_values(
      config, "experiments", lambda n: n in accepted,
      f"distinct comma-separated names from {', '.join(accepted)}"))


def _study(name: str) -> study_lib.Study:
  return study_lib.study_of(name)


def check(config, results_dir) -> None:
  for name in experiment_names(config):
    study_lib.check(_study(name), registry.load_config(name), results_dir)
  results.check_writable(results_dir, "claims")


def run(config, results_dir, progress: bool = True) -> pathlib.Path:
  names = experiment_names(config)
  run_dir = rundir.RunDir.create(results_dir, "claims").path
  saved = {"experiment": "claims", "config": config.to_dict(), "status": "running",
           **results.provenance(train.run_mesh())}
  results.write_json(run_dir / "config.json", saved)
  runs = {}
  for name in names:
    print(f"== {name}", flush=True)
    runs[name] = str(study_lib.run(_study(name), registry.load_config(name), results_dir,
                                   progress=progress))
    results.write_json(run_dir / "runs.json", runs)  # progress survives a crash
  results.write_json(run_dir / "config.json", {**saved, "status": "complete"})
  finish(run_dir)
  return run_dir


def collect(runs: dict[str, str]) -> list[dict[str, Any]]:
  """Every claim of every experiment run, tagged with its experiment, and
  corrected across the whole table."""
  rows = []
  for name, exp_dir in runs.items():
    summary = results.read_json(pathlib.Path(exp_dir) / "summary.json")
    for claim in summary.get("claims", []):
      rows.append({**claim, "experiment": name, "run_dir": exp_dir,
                   "corrected_in_run": claim["corrected_verdict"]})
  stats.correct(rows)
  return rows


def finish(run_dir: pathlib.Path) -> None:
  run_dir = pathlib.Path(run_dir)
  runs = results.read_json(run_dir / "runs.json")
  rows = collect(runs)
  results.write_json(run_dir / "summary.json", {
      "runs": runs, "verdict_counts": report.verdict_counts(rows),
      "corrected_counts": report.verdict_counts(rows, "corrected_verdict"), "claims": rows})

  def link(r):
    rel = os.path.relpath(pathlib.Path(r["run_dir"]), run_dir)
    return f"[{r['experiment']}]({rel}/report.md)"

  lines = ["# qkvjax: every claim, measured", "",
           "Each claim of the attention explainers was tested by its own experiment, seeds "
           "trained together in one vmapped program. The corrected column applies "
           "Holm–Bonferroni across this whole table, so it is stricter than each "
           "experiment's own report.", "", report.HOW_TO_READ, "",
           report.counts_line(rows), ""]
  lines += report.claims_table(rows, link=link)
  lines += ["", "## Figures by experiment", ""]
  for name, exp_dir in runs.items():
    rel = os.path.relpath(pathlib.Path(exp_dir), run_dir)
    pngs = sorted(p.name for p in pathlib.Path(exp_dir).glob("*.png"))
    lines.append(f"- **{name}** ([report]({rel}/report.md)): "
                 + ", ".join(f"[{p[:-4]}]({rel}/{p})" for p in pngs))
  lines.append("")
  results.write_atomic(run_dir / "report.md", "\n".join(lines))
