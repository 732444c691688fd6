"""``report.md``: what a run showed, claim by claim, with its figures."""

from __future__ import annotations

import pathlib
from typing import Any

from qkvjax import results


def fmt(x, digits: int = 3) -> str:
  return "n/a" if x is None else f"{x:.{digits}g}"


def effect_cell(effect: dict[str, Any]) -> str:
  ci = effect["ci95"]
  ci_text = "n/a" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"
  return f"{fmt(effect['mean'])} ± {fmt(effect['std'])} (95% CI {ci_text})"


def cell(text) -> str:
  """Text safe inside a markdown table cell."""
  return str(text).replace("|", "\\|").replace("\n", " ")


def diverged_lines(diverged) -> list[str]:
  """The diverged seeds, from a list of ``{"seed", "step"}`` or a dict of
  such lists per condition; they are excluded from the statistics."""
  def seeds(items):
    return ", ".join(f"seed {d['seed']} at step {d['step']}" for d in items)
  if isinstance(diverged, dict):
    text = "; ".join(f"{k}: {seeds(v)}" for k, v in diverged.items() if v)
  else:
    text = seeds(diverged)
  if not text:
    return ["No seed diverged.", ""]
  return ["**Diverged seeds** (NaN from divergence on, excluded from the statistics): "
          + text, ""]


def quote_lines(claims: list[dict[str, Any]]) -> list[str]:
  """Each claim with the article quote it tests."""
  return [f"- *{c['claim']}* — “{c['quote']}” ({c['source']})" for c in claims]


def redraw_lines(run_dir) -> list[str]:
  """The closing note every report ends with."""
  return ["", "Per-seed values are in `summary.json`; every logging point in "
          "`metrics.jsonl`. Redraw the summary, figures and report without training: "
          f"`python -m experiments.run --exp=figures --config.run_dir={run_dir}`.", ""]


def figure_lines(figures: dict[str, str]) -> list[str]:
  """A report section per figure: the PNG embedded, the PDF linked."""
  lines = []
  for title, png in figures.items():
    lines += [f"### {title}", "", f"![{title}]({png}) ([PDF]({png[:-4]}.pdf))", ""]
  return lines


def claims_table(claims: list[dict[str, Any]]) -> list[str]:
  lines = ["| claim | measured | effect: mean ± std (95% CI) | seeds | verdict |",
           "|---|---|---|---|---|"]
  for c in claims:
    lines.append(f"| {cell(c['claim'])} | {cell(c['measured'])} | {effect_cell(c['effect'])} | "
                 f"{c['effect']['n']} | **{c['verdict']}** |")
  return lines


def write_specialization_report(run_dir: pathlib.Path, saved_config: dict[str, Any],
                                summary: dict[str, Any], figures: dict[str, str]) -> None:
  cfg = saved_config["config"]
  m = cfg["model"]
  lines = [
      "# qkvjax: how W_Q, W_K and W_V specialize",
      "",
      f"Run `{run_dir.name}`: {cfg['num_seeds']} seeds × {cfg['steps']} steps, "
      f"{m['n_layers']} layers × {m['n_heads']} heads, d_model {m['d_model']}, "
      f"d_head {m['d_head']}, {'causal' if m['causal'] else 'bidirectional'}, "
      f"optimizer {cfg['optim']['optimizer']} lr {cfg['optim']['learning_rate']}; "
      f"backend {saved_config['backend']} ({saved_config['device_kind']}), "
      f"jax {saved_config['versions']['jax']}, commit {saved_config['git_commit']}.",
      "",
      "Task: a sequence of nouns of distinct categories followed by a verb; the model "
      "predicts, at the verb, the colour of the noun the verb selects (`task.json`). "
      "Effects are across seeds: mean ± std, 95% expanded-percentile bootstrap CI of the mean; "
      "a claim is *supported* when the CI lies on the claimed side, *not supported* "
      "when it lies on the other, and *inconclusive* otherwise.",
      "",
  ]
  lines += diverged_lines(summary["diverged_seeds"])
  lines += ["## Claims", ""] + claims_table(summary["claims"]) + [""]
  lines += ["## Quotes tested", ""]
  lines += quote_lines(summary["claims"])
  lines += ["", "## Figures", ""]
  lines += figure_lines(figures)
  final = summary["final"]
  lines += ["## Final values", "", "| metric | mean ± std (95% CI) | seeds |", "|---|---|---|"]
  for key in ("loss", "accuracy"):
    lines.append(f"| {key} | {effect_cell(final[key])} | {final[key]['n']} |")
  lines += redraw_lines(run_dir)
  results.write_atomic(run_dir / "report.md", "\n".join(lines))
