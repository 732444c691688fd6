"""The headline experiment: do W_Q, W_K and W_V specialize as the articles say?

``run`` trains the selection task over many seeds and writes
``results/specialization/<run_id>/``; ``evaluate_claims`` turns the saved
metrics into one verdict per claim.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from qkvjax import config as config_lib
from qkvjax import plotting
from qkvjax import report
from qkvjax import results
from qkvjax import runner
from qkvjax import stats
from qkvjax import train
from qkvjax.metrics import QKV

ARTICLE_000 = "../shared/seeds/000 (division of labour among Q, K, V)"
ARTICLE_001 = "../shared/seeds/001 (Q asks, K indexes, V carries content)"


def _final(rows, key) -> np.ndarray:
  return results.metric_table(rows, key)[1][:, -1]


def _initial(rows, key) -> np.ndarray:
  return results.metric_table(rows, key)[1][:, 0]


def spectral_distance(rows, n_layers: int, index: int) -> np.ndarray:
  """Per seed: the largest, over pairs of W_Q, W_K, W_V, mean over layers, of
  mean |s_a - s_b| / mean(s_a, s_b) between their singular-value spectra."""
  per_layer = []
  for l in range(n_layers):
    s = {name: results.spectrum(rows, l, name, index) for name in QKV}
    pair = [np.mean(np.abs(s[a] - s[b]), 1) / np.mean((s[a] + s[b]) / 2, 1)
            for a, b in (("query", "key"), ("query", "value"), ("key", "value"))]
    per_layer.append(np.max(pair, 0))
  return np.mean(per_layer, 0)


def _best_head(rows, prefix: str, n_layers: int, n_heads: int, index: int):
  """Per seed, the max over layers and heads of ``prefix/L*/H*`` and which
  one; NaN and no head for a diverged seed."""
  keys = [f"{prefix}/L{l}/H{h}" for l in range(n_layers) for h in range(n_heads)]
  table = np.stack([results.metric_table(rows, k)[1][:, index] for k in keys], 1)
  finite = np.isfinite(table).any(1)
  filled = np.where(np.isfinite(table), table, -np.inf)
  best = np.where(finite, filled.max(1), np.nan)
  return best, [keys[i] for i, ok in zip(filled.argmax(1), finite) if ok]


def evaluate_claims(rows: list[dict[str, Any]], config,
                    task_tables: dict[str, Any]) -> list[dict[str, Any]]:
  """One entry per claim: the quote, what was measured, effect with 95% CI
  across seeds, and the verdict. Diverged seeds are excluded (NaN)."""
  n_layers, n_heads = config.model.n_layers, config.model.n_heads
  out = []

  acc = _final(rows, "accuracy")
  bar = task_tables["verb_only_accuracy"]
  out.append(stats.claim(
      name="prerequisite: the task is learned",
      quote="(not a claim; the other verdicts mean little if the model fails)",
      source="-",
      measured=("final accuracy minus the best accuracy possible from the verb alone "
                f"({bar:.3f}; chance is {1 / config.task.n_details:.3f})"),
      values=acc - bar, verdict=stats.verdict_greater(acc - bar)))

  ablated = _final(rows, "ablate_qk/accuracy")
  out.append(stats.claim(
      name="the task is solved through Q.K selection",
      quote=("Q \"actively\" seeks certain features associated with other tokens, while "
             "K is \"passively\" prepared to be matched by other tokens"),
      source=ARTICLE_000,
      measured=("final accuracy minus accuracy with W_Q = W_K = 0 in every layer "
                "(uniform attention, everything else unchanged)"),
      values=acc - ablated, verdict=stats.verdict_greater(acc - ablated)))

  d_init = spectral_distance(rows, n_layers, 0)
  margin = 0.10
  out.append(stats.claim(
      name="W_Q, W_K, W_V start statistically identical",
      quote="W_Q, W_K, W_V matrices are all randomly initialized",
      source=ARTICLE_000,
      measured=("at step 0, relative L1 distance between singular-value spectra of "
                f"the most different pair (mean over layers); supported if the 95% CI "
                f"lies below the equivalence margin {margin}"),
      values=d_init, verdict=stats.verdict_equivalent(d_init, margin)))

  d_end = spectral_distance(rows, n_layers, -1)
  out.append(stats.claim(
      name="W_Q, W_K, W_V differentiate during training",
      quote=("the model naturally develops functional differentiation during the "
             "optimization"),
      source=ARTICLE_000,
      measured="spectral distance (as above) at the end minus at step 0",
      values=d_end - d_init, verdict=stats.verdict_greater(d_end - d_init)))

  ratio = []
  for l in range(n_layers):
    g = {name: _initial(rows, f"grad_norm/L{l}/{name}") for name in QKV}
    ratio.append(np.log10(g["value"] / np.sqrt(g["query"] * g["key"])))
  ratio = np.mean(ratio, 0)
  out.append(stats.claim(
      name="the gradient reaches V through the weighted sum, Q and K only through Q.K",
      quote=("Gradients for W_V: Come from the final weighted sum ... Gradients for "
             "W_Q: Mainly come from the similarity calculation"),
      source=ARTICLE_000,
      measured=("log10 of grad-norm(W_V) / geometric mean of grad-norms(W_Q, W_K) at "
                "step 0, mean over layers; > 0 means V gets the larger gradient while "
                "attention is still diffuse"),
      values=ratio, verdict=stats.verdict_greater(ratio)))

  cos = {pair: np.mean([_final(rows, f"update_cos/L{l}/{pair}") for l in range(n_layers)], 0)
         for pair in ("query_key", "query_value", "key_value")}
  shared = np.abs(cos["query_key"]) - (np.abs(cos["query_value"]) + np.abs(cos["key_value"])) / 2
  out.append(stats.claim(
      name="Q and K are shaped by one signal (the Q.K similarity), V by another",
      quote=("Gradients for W_K: Also come from Q-K similarity calculation ... Gradients "
             "for W_V: Come from the final weighted sum"),
      source=ARTICLE_000,
      measured=("|cosine| between the cumulative updates of W_Q and W_K minus the mean "
                "|cosine| of each with W_V's, at the end, mean over layers"),
      values=shared, verdict=stats.verdict_greater(shared)))

  best_end, where = _best_head(rows, "attn_target", n_layers, n_heads, -1)
  best_init, _ = _best_head(rows, "attn_target", n_layers, n_heads, 0)
  out.append(stats.claim(
      name="Q seeks the feature K advertises (verb's query finds the selected noun)",
      quote=("Q \"actively\" seeks certain features associated with other tokens, "
             "while K is \"passively\" prepared to be matched"),
      source=ARTICLE_000,
      measured=("attention weight from the verb onto the ground-truth noun in the "
                "best head (max over layers and heads), end minus step 0; best heads: "
                + ", ".join(sorted(set(where)))),
      values=best_end - best_init, verdict=stats.verdict_greater(best_end - best_init)))

  rank_gap = np.mean([_final(rows, f"eff_rank/L{l}/key") - _final(rows, f"eff_rank/L{l}/query")
                      for l in range(n_layers)], 0)
  out.append(stats.claim(
      name="K is a broad index, Q a focused query",
      quote=("K is like an index that needs to summarize all the main features of a "
             "token, but Q focuses on querying a specific feature"),
      source=ARTICLE_000,
      measured=("effective rank of W_K minus that of W_Q at the end, mean over layers "
                "(> 0: K spans more directions)"),
      values=rank_gap, verdict=stats.verdict_greater(rank_gap)))

  for l in range(n_layers):
    cka = {name: _final(rows, f"cka_embed/L{l}/{name}") for name in QKV}
    gap = cka["value"] - np.maximum(cka["query"], cka["key"])
    out.append(stats.claim(
        name=f"V stays closest to the token's embedding (layer {l})",
        quote=("A token's V (Value) is most related to the token's initial embedding"),
        source=ARTICLE_000,
        measured=(f"layer {l}: linear CKA(V, token embedding) minus the larger of "
                  "CKA(Q, embedding) and CKA(K, embedding), at the end"),
        values=gap, verdict=stats.verdict_greater(gap)))
  return out


def summarize(rows: list[dict[str, Any]], config,
              task_tables: dict[str, Any]) -> dict[str, Any]:
  """Final value per seed with mean, std and 95% CI for every metric, the
  diverged seeds, and the claim verdicts."""
  keys = [k for k in rows[0] if k not in ("step", "seed")]
  final = {}
  for key in keys:
    v = _final(rows, key)
    final[key] = {**stats.describe(v), "per_seed": v}
  diverged = _final(rows, "diverged")
  div_steps = _final(rows, "diverged_step")
  steps = sorted({r["step"] for r in rows})
  return {
      "num_seeds": int(len(diverged)),
      "final_step": steps[-1],
      "diverged_seeds": [{"seed": int(i), "step": int(div_steps[i])}
                         for i in np.flatnonzero(diverged > 0)],
      "claims": evaluate_claims(rows, config, task_tables),
      "final": final,
  }


def check(config, results_dir) -> None:
  config_lib.validate_training_config(config)
  results.check_writable(results_dir, "specialization")


def run(config, results_dir: str | pathlib.Path, progress: bool = True) -> pathlib.Path:
  """Trains, then writes config, metrics, summary, figures and report."""
  trainer = train.make_trainer(config)
  run_dir = runner.start_run(results_dir, "specialization", config, trainer.mesh)
  results.write_json(run_dir / "task.json", trainer.task.tables())
  writer = results.MetricsWriter(run_dir / "metrics.jsonl")
  try:
    state = runner.train_and_log(trainer, writer, progress)
  finally:
    writer.close()
  results.write_json(run_dir / "attention_sample.json",
                     runner.attention_sample(trainer, state))
  finish(run_dir)
  return run_dir


def finish(run_dir: pathlib.Path) -> None:
  """Summary, figures and report from the saved files alone."""
  saved, config, rows = results.load_run(run_dir)
  tables = results.read_json(run_dir / "task.json")
  summary = summarize(rows, config, tables)
  results.write_json(run_dir / "summary.json", summary)
  figures = plotting.specialization_figures(run_dir, rows, config,
                                            tables["verb_only_accuracy"])
  report.write_specialization_report(run_dir, saved, summary, figures)
