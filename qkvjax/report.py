"""``report.md``: the same sections for every study, from its summary."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from qkvjax import bibliography
from qkvjax import plotting
from qkvjax import results
from qkvjax import stats
from qkvjax.metrics import circuits

HOW_TO_READ = (
    "Effects are across seeds: mean ± std and a 95% expanded-percentile bootstrap CI "
    "of the mean (Hesterberg 2015). **verdict**: *supported* when the CI lies on the "
    "claimed side of the threshold (or, for an equivalence, inside the margin), *not "
    "supported* when it lies on the other side (outside), *inconclusive* when it "
    "straddles, *negligible* when it reaches no further than the claim's smallest effect "
    "of interest past the threshold, without lying on the other side (an effect, if any, "
    "too small to matter). **corrected**: "
    "the same verdict only if its p-value (a t-test of that decision) survives "
    "Holm–Bonferroni at 5% across all claims of the table, else *inconclusive*. Read "
    "the corrected column when asking whether any single claim holds given how many "
    "were tested.")


def fmt(x, digits: int = 3) -> str:
  return "n/a" if x is None else f"{x:.{digits}g}"


def effect_cell(effect: dict[str, Any]) -> str:
  ci = effect["ci95"]
  ci_text = "n/a" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"
  return f"{fmt(effect['mean'])} ± {fmt(effect['std'])} (95% CI {ci_text})"


def cell(text) -> str:
  """Text safe inside a markdown table cell."""
  return str(text).replace("|", "\\|").replace("\n", " ")


def pvalue_cell(p: float) -> str:
  return "<1e-4" if p < 1e-4 else f"{p:.2g}"


def claims_table(claims: list[dict[str, Any]], link=None) -> list[str]:
  """The claims table; ``link(claim) -> str`` adds an experiment column."""
  head = "| claim |" + (" experiment |" if link else "") + (
      " measured | effect: mean ± std (95% CI) | seeds | claimed (smallest effect) | p | "
      "verdict | corrected |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for c in claims:
    lines.append(
        f"| {cell(c['claim'])} |" + (f" {link(c)} |" if link else "")
        + f" {cell(c['measured'])} | {effect_cell(c['effect'])} | {c['effect']['n']} | "
        f"{cell(c['rule'])} | {pvalue_cell(c['p_value'])} | **{c['verdict']}** | "
        f"**{c['corrected_verdict']}** |")
  return lines


def table(headers: list[str], rows: list[list]) -> list[str]:
  """A markdown table; cells are formatted with ``cell``."""
  return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
          + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows])


def spec_table(columns: dict[str, Callable[[Any], Any]], items: Iterable) -> list[str]:
  """A markdown table from a column spec ``{header: item -> cell}``, a row per item."""
  return table(list(columns), [[f(x) for f in columns.values()] for x in items])


def seeds_cell(values) -> str:
  """``effect_cell`` of per-seed values."""
  return effect_cell(stats.describe(values))


def structure_table(rows: list[list]) -> list[str]:
  """Symmetry and directionality of W_Q W_K^T: ``rows`` [model, objective,
  symmetry, directionality, source] measured here, then the published medians."""
  src = "Saponati et al. (2025), the tables of the paper's repository"
  return table(["model", "objective", "symmetry", "directionality", "source"],
               rows + [[name, kind, fmt(s), fmt(d), src]
                       for name, kind, s, d in circuits.PUBLISHED_MEDIANS])


def verdict_counts(claims: list[dict[str, Any]], key: str = "verdict") -> dict[str, int]:
  counts: dict[str, int] = {}
  for c in claims:
    counts[c[key]] = counts.get(c[key], 0) + 1
  return counts


def counts_line(claims: list[dict[str, Any]]) -> str:
  def text(key):
    return ", ".join(f"{n} {v}" for v, n in sorted(verdict_counts(claims, key).items()))
  return (f"{len(claims)} claims. Raw verdicts: {text('verdict')}. Corrected "
          f"(Holm–Bonferroni): {text('corrected_verdict')}.")


def diverged_lines(diverged: dict[str, list[dict[str, Any]]]) -> list[str]:
  """The diverged and unstable seeds per condition; they are excluded from the
  statistics from that step on."""
  text = "; ".join(f"{k}: " + ", ".join(
      f"seed {d['seed']} at step {d['step']}" + (" (unstable)" if d.get("why") == "unstable"
                                                 else "") for d in v)
                   for k, v in diverged.items() if v)
  if not text:
    return ["No seed diverged or became unstable.", ""]
  return ["**Diverged or unstable seeds** (a non-finite loss or parameter; or, *unstable*, "
          f"a loss above {results.UNSTABLE_FACTOR:g}× its value at step 0; NaN from that "
          "step on, excluded from the statistics): " + text, ""]


def partial_lines(partial: list[dict[str, Any]]) -> list[str]:
  """Logging points dropped because they were written for too few seeds."""
  if not partial:
    return []
  return ["**Dropped partial logging points** (written for fewer seeds than the run has, "
          "by an interrupted write): " + "; ".join(
              f"{p['condition']} step {p['step']} ({p['rows']} of {p['expected']} rows)"
              for p in partial), ""]


def quote_lines(claims: list[dict[str, Any]]) -> list[str]:
  """Each claim with the quote it tests and its source, cited by title."""
  return [f"- *{c['claim']}* — “{c['quote']}” ({bibliography.cite(c['source'])})"
          for c in claims]


def figure_lines(figures: dict[str, str]) -> list[str]:
  """A report section per figure: the first format embedded, the others linked."""
  if not plotting.FORMATS:
    return ["Not drawn (`--figure_formats=none`); the redraw command below draws them.", ""]
  lines = []
  for title, first in figures.items():
    stem = first.rsplit(".", 1)[0]
    links = " ".join(f"([{ext.upper()}]({stem}.{ext}))" for ext in plotting.FORMATS[1:])
    lines += [f"### {title}", "", f"![{title}]({first}) {links}".rstrip(), ""]
  return lines


def redraw_lines(run_dir) -> list[str]:
  """The closing note every report ends with."""
  return ["", "Per-seed values are in `summary.json`; every logging point in "
          "`metrics.jsonl`. Redraw the summary, figures and report without training: "
          f"`python -m experiments.run --exp=figures --config.run_dir={run_dir}`.", ""]


def header_lines(run: results.Run, title: str, summary: dict[str, Any]) -> list[str]:
  saved, cfg = run.saved, run.config
  status = saved.get("status", "complete")
  lines = [f"# {title}", ""]
  if status != "complete":
    lines += [f"**INCOMPLETE RUN ({status})**: the figures and verdicts below are "
              f"computed from what was logged, up to step {summary['final_step']} of "
              f"{cfg.get('steps', '?')}.", ""]
  conds = ", ".join(f"`{k}`" for k in run.conditions)
  lines += [
      f"Run `{run.dir.name}`: {cfg.get('num_seeds', '?')} seeds × "
      f"{summary['final_step']} steps; conditions {conds}; backend {saved['backend']} "
      f"({saved['device_kind']}, {len(saved['devices'])} device(s)), jax "
      f"{saved['versions']['jax']}, flax {saved['versions'].get('flax')}, commit "
      f"{saved['git_commit']}. The full config is in `config.json`.", ""]
  return lines


def claims_lines(claims: list[dict[str, Any]], unit: str = "seeds") -> list[str]:
  """The claims section and the quotes tested; ``unit`` heads the count column."""
  table_lines = claims_table(claims)
  return (["## Claims", "", counts_line(claims), "",
           table_lines[0].replace("| seeds |", f"| {unit} |"), *table_lines[1:], ""]
          + ["## Quotes tested", ""] + quote_lines(claims) + [""])


def write(run: results.Run, title: str, description: str, summary: dict[str, Any],
          figures: dict[str, str], sections: list[str]) -> None:
  lines = header_lines(run, title, summary)
  lines += [description, "", HOW_TO_READ, ""]
  lines += diverged_lines(summary["diverged_seeds"])
  lines += partial_lines(run.partial)
  lines += claims_lines(summary["claims"])
  lines += ["## Figures", ""] + figure_lines(figures)
  lines += sections
  lines += redraw_lines(run.dir)
  results.write_atomic(run.dir / "report.md", "\n".join(lines))


def change_cell(values_SxN) -> str:
  """Mean ± std across seeds at the first and the last logging point of
  [seeds, steps] values (NaN seeds skipped): ``"a ± b → c ± d"``."""
  mean, std = plotting.nan_mean_std(values_SxN[:, [0, -1]])
  return " → ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(mean, std))
