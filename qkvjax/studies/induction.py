"""``--exp=induction``: Q, K and V specialize into an induction head.

A 2-layer attention-only transformer with frozen random embeddings trains on
Bietti et al.'s (2023) trigger-bigram sequences (``tasks.induction``); a
1-layer model and a 2-layer model with W_K = W_Q train alike. The circuit
scores (``metrics.induction``) follow Elhage et al. (2021) and Olsson et al.
(2022); the curve analysis (drop step, sharpness, rise steps) reads the saved
metrics only.
"""

from __future__ import annotations

import numpy as np

from qkvjax import config as config_lib
from qkvjax import metrics
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.claim_kinds import QUOTE_INDEPENDENT
from qkvjax.metrics import induction as ind
from qkvjax.models.transformer import POSITIONS
from qkvjax.studies import induction_analysis as ana
from qkvjax.studies import induction_figures as figs
from qkvjax.studies.induction_analysis import baselines, best, comp, drop, formed, gain, rise
from qkvjax.study import Claim, Figure

Q_OLSSON = ("We find that induction heads develop at precisely the same point as a sudden "
            "sharp increase in in-context learning ability, visible as a bump in the "
            "training loss.")
Q_ONE_LAYER = ("(paraphrase of Olsson et al.) one-layer attention-only models form no "
               "induction heads and show no phase change; two-layer models do")
Q_KCOMP = "K-Composition: W_K reads in a subspace affected by a previous head."
Q_COPY = ("(paraphrase of Elhage et al.) an induction head's OV circuit copies: its "
          "eigenvalues through embedding and unembedding are mostly positive")
Q_ORDER = ("(paraphrase of Bietti et al.) the induction mechanism is learned top-down: "
           "W_O^2 (copy) first, then W_K^2 (token recall), then W_K^1 (previous position)")
Q_BIGRAM = ("(paraphrase of Bietti et al.) global bigrams are learned quickly, the "
            "induction head more slowly")


def conditions(config) -> dict[str, dict]:
  del config
  return {"main": {}, "one_layer": {"model.n_layers": 1, "composition": False},
          "tied": {"model.tie": "qk"}}


def claims(run) -> list[Claim]:
  b, w = baselines(run), run.config.drop_window * run.config.log_every
  sesoi_c = 0.5 * b["composition"]
  fin = lambda r, c: gain(r, c)[:, -1]
  out = [
      Claim("prerequisite: repeated trigger outputs are learned beyond the bigram baseline",
            "(not a claim; without an induction mechanism the scores below say little)",
            "qkvjax", "2-layer: final accuracy on repeated minus first trigger outputs (the "
            "same unpredictable-without-context token); SESOI 0.2", lambda r: fin(r, "main"),
            stats.Greater(0.0, 0.2)),
      Claim("phase change: the loss on repeated outputs drops abruptly", Q_OLSSON,
            "olsson2022", f"2-layer: steepest fall over {w} steps of the repeated-output loss "
            "minus the first-output loss (their shared fall from the random-init loss "
            "cancels), divided by its average fall over the run (1 = a straight line); > 1, "
            "SESOI 1 (twice the average)", lambda r: drop(r)[1],
            stats.Greater(1.0, 1.0)),
      Claim("a plateau precedes the drop", Q_OLSSON, "olsson2022", "2-layer: first step "
            f"of the steepest window minus one window ({w} steps): > 0 when a window of "
            f"logging points precedes the fall; SESOI {w} steps",
            lambda r: drop(r)[0] - 1.5 * w, stats.Greater(0.0, float(w))),
      Claim("prefix matching rises in the window of the drop", Q_OLSSON, "olsson2022",
            "2-layer: half-rise step of the best layer-2 prefix-matching score minus the drop "
            f"step; equivalent to 0 within one drop window ({w} steps)",
            lambda r: rise(r, best(r, "prefix_matching", "L1", "main")[0]) - drop(r)[0],
            stats.Equivalent(float(w))),
      Claim("a 1-layer model does not learn repeated outputs beyond the bigram baseline",
            Q_ONE_LAYER, "olsson2022", "1-layer: final accuracy on repeated minus first "
            "outputs; equivalent to 0 within 0.1", lambda r: fin(r, "one_layer"),
            stats.Equivalent(0.1)),
      Claim("two layers learn repeated outputs better than one", Q_ONE_LAYER, "olsson2022",
            "final repeated-minus-first accuracy, 2-layer minus 1-layer, paired by seed; "
            "SESOI 0.2", lambda r: fin(r, "main") - fin(r, "one_layer"),
            stats.Greater(0.0, 0.2)),
      Claim("in-context learning: late tokens are predicted better than early ones",
            Q_OLSSON, "olsson2022", "2-layer: final ICL score (loss of the last eighth of "
            "positions minus an early eighth), < 0; SESOI 0.1 nats",
            lambda r: r.final("eval/icl_score", condition="main"), stats.Less(0.0, 0.1)),
      Claim("global bigrams are learned before the induction head", Q_BIGRAM, "bietti2023",
            "2-layer: drop step minus the half-rise step of the bigram-position accuracy; "
            f"SESOI {w} steps", lambda r: drop(r)[0] - rise(r, "eval/accuracy/bigram"),
            stats.Greater(0.0, float(w))),
      Claim("the induction head's key reads what the previous-token head wrote", Q_KCOMP,
            "elhage2021", f"2-layer, final: K-composition of the best previous-token head with "
            f"the best prefix-matching head minus the random baseline ({b['composition']:.3f}, "
            f"same shapes); SESOI {sesoi_c:.3f} (half the baseline)",
            lambda r: comp(r, "k") - b["composition"], stats.Greater(0.0, sesoi_c)),
      Claim("K-composition exceeds the same pair's Q- and V-composition", Q_KCOMP,
            "elhage2021", f"2-layer, final: K minus max(Q, V) composition; SESOI {sesoi_c:.3f}",
            lambda r: comp(r, "k") - np.maximum(comp(r, "q"), comp(r, "v")),
            stats.Greater(0.0, sesoi_c)),
      Claim("the induction head's OV circuit copies", Q_COPY, "elhage2021",
            "2-layer, final: sum(λ)/sum(|λ|) of W_U W_O W_V W_E of the best prefix-matching "
            f"head minus random matrices' ({b['copying']:.3f}); SESOI 0.2",
            lambda r: np.array([r.final(f"ov_copying/L1/H{h}", condition="main")[s] for s, h in
                                enumerate(best(r, "prefix_matching", "L1", "main")[1])])
            - b["copying"], stats.Greater(0.0, 0.2))]
  for late, early in (("previous_position", "token"), ("token", "copy")):
    out.append(Claim(f"top-down: the {early} probe rises before the {late} probe", Q_ORDER,
                     "bietti2023", f"2-layer: half-rise step of recall/{late} minus that of "
                     f"recall/{early}, paired by seed; SESOI {run.config.log_every} steps",
                     lambda r, a=late, e=early: rise(r, f"recall/{a}") - rise(r, f"recall/{e}"),
                     stats.Greater(0.0, float(run.config.log_every))))
  out += [Claim("with W_K = W_Q the induction head forms later or not at all",
                QUOTE_INDEPENDENT, "division_of_labor", "step at which the repeated-minus-"
                "first accuracy first reaches 0.3 (censored at the end), tied minus untied, "
                f"paired by seed; SESOI {w} steps", lambda r: formed(r, "tied")
                - formed(r, "main"), stats.Greater(0.0, float(w))),
          Claim("the key reads a different subspace than the query only when untied",
                QUOTE_INDEPENDENT, "division_of_labor", "final K minus Q composition, untied "
                "minus tied (tied: W_Q W_Q^T is symmetric, so K = Q composition exactly); "
                f"SESOI {sesoi_c:.3f}", lambda r: (comp(r, "k") - comp(r, "q"))
                - (comp(r, "k", "tied") - comp(r, "q", "tied")), stats.Greater(0.0, sesoi_c))]
  return out


def figures(run) -> list[Figure]:
  return [Figure("The phase change, every seed", "phase_change", figs.phase_figure),
          Figure("Per-head scores at the end", "heads", figs.heads_figure),
          Figure("Composition of layer-1 and layer-2 heads", "composition",
                 figs.composition_figure),
          Figure("Attention on a repeated random sequence", "attention", figs.attention_figure)]


def sections(run, summary) -> list[str]:
  del summary
  lines = ["## Beside the papers", ""]
  lines += report.table(["finding", "the papers", "this run (mean ± std [95% CI])"],
                        ana.paper_rows(run))
  c, m = run.config, run.config.model
  return lines + ["", "Settings that differ from the papers: Bietti et al. train on the "
                  "characters of a different text, with sequences of 256, d_model 256 and "
                  "batch 512, and no LayerNorm; here the documentation prose's "
                  f"{'lowercased ' if c.task.lowercase else ''}characters, sequences of "
                  f"{c.task.seq_len}, d_model {m.d_model}, batch {c.batch_size}, pre-LayerNorm "
                  f"(its gains left out of the circuit scores), Adam at "
                  f"{c.optim.learning_rate:g} for {c.steps} steps. Olsson et al.'s and "
                  "Elhage et al.'s models are trained on natural-language tokens for billions "
                  "of tokens; their scores are computed on those models, ours on this toy "
                  "task. `get_config(\"paper\")` has Bietti et al.'s sizes.", ""]


def describe(run) -> str:
  c, tj = run.config, run.file("task.json")["induction"]
  return (f"{c.num_seeds} seeds per condition of an attention-only transformer (one head "
          f"per layer, d_model {c.model.d_model}, frozen random token embedding and "
          f"unembedding, {c.model.positions} positions) trained on Bietti et al.'s "
          f"sequences: {c.task.seq_len + 1} characters from the bigram statistics of "
          f"{tj['source']} ({len(tj['vocab'])} characters, {tj['n_chars']:,} in the text), "
          f"with {c.task.n_triggers} trigger characters per sequence each always followed by "
          "its own random output. Conditions: 2 layers, 1 layer, and 2 layers with W_K = "
          "W_Q. Each position is a global bigram, a trigger's first output (unpredictable: "
          "the bigram baseline) or a repeated trigger output (predictable only in context). "
          f"Logged every {c.log_every} steps on {c.eval_batch} fixed sequences and "
          f"{c.probe_batch} repeated random sequences of {c.task.probe_len} tokens "
          "(Olsson et al.'s probe).")


def validate(config) -> None:
  config_lib.validate_common(config)
  require = config_lib.require
  require(config.num_seeds >= 2, "num_seeds", config.num_seeds,
          "an integer >= 2 (claims need a CI across seeds)")
  require(not config.composition or config.model.n_layers >= 2, "composition",
          config.composition, "false for a 1-layer model (composition scores need a layer-2 "
          "head reading a layer-1 head)")
  require(config.model.n_layers in (1, 2), "model.n_layers", config.model.n_layers,
          "1 or 2 (the study's circuits are layer 1 and layer 2)")
  require(not config.model.mlp, "model.mlp", config.model.mlp,
          "false (the circuits are those of attention-only models)")
  config_lib.require_choice(config, "model.positions", POSITIONS)
  config_lib.require_at_least(config, ("eval_batch", "probe_batch", "drop_window"))
  config_lib.require_at_least(config, ("skip_steps",), 0)
  need = config.skip_steps + (config.drop_window + 1) * config.log_every
  require(config.steps >= need, "steps", config.steps,
          f"an integer >= skip_steps + (drop_window + 1) * log_every = {need}")


STUDY = study.Study(
    name="induction", title="qkvjax: induction heads — Q, K and V specialize into a circuit",
    task="induction", conditions=conditions,
    metrics=(ind.induction_metrics(64, 16), metrics.ov_copying), claims=claims, figures=figures,
    describe=describe, sections=sections, validate=validate, samples=ana.samples,
    summary=ana.summary, compile_options=train.FAST_COMPILE)
