"""``--exp=pretrained``: W_Q, W_K, W_V of a real pretrained Transformer.

Loads a Hugging Face checkpoint (``qkvjax.pretrained``; BERT family, GPT-2,
Llama/Mistral) and measures, without training: on the weights, per layer and
head, the symmetry and directionality of W_Q W_K^T (Saponati et al. 2025),
the OV copying score, and the spectra and effective rank of W_Q, W_K, W_V;
on real text (when the checkpoint has a tokenizer), per layer, CKA of the Q,
K, V vectors with the word embeddings, and attention entropy per head. A
frozen model has one "seed": text claims take their CI over text samples,
weight claims over layers. ``metrics.jsonl`` holds one ``weights`` row and
one ``text`` row per text sample; everything else is drawn from it.
"""

from __future__ import annotations

import numpy as np

from qkvjax import claim_kinds
from qkvjax import config as config_lib
from qkvjax import plotting
from qkvjax import report
from qkvjax import results
from qkvjax import rundir
from qkvjax import stats
from qkvjax import study
from qkvjax.pretrained import saved
from qkvjax.pretrained.saved import Saved
from qkvjax.study import Claim

plt = plotting.plt
QKV = plotting.QKV


def _checked(config, results_dir):
  """``(Loaded, passages or None)``: every check that needs no weight values,
  and that the results directory is writable."""
  from qkvjax import pretrained  # pylint: disable=g-import-not-at-top
  config_lib.require_at_least(config, ("text.num_samples",), 2)
  config_lib.require_at_least(config, ("text.passages",))
  config_lib.require_at_least(config, ("text.seq_len",), 8)
  got = pretrained.inspect(config.checkpoint)
  if got.tokenizer is not None:  # without one there is no text (an exported run's model)
    config_lib.require(config.text.seq_len <= got.arch.max_len, "text.seq_len",
                       config.text.seq_len, f"8..{got.arch.max_len} (the checkpoint's "
                       "longest input)")
  ids = pretrained.passages(got, config.text)
  results.check_writable(results_dir, "pretrained")
  return got, ids


def check(config, results_dir) -> None:
  _checked(config, results_dir)


def run(config, results_dir, progress: bool = True):
  """Loads, measures, writes the rows, then ``finish``."""
  del progress
  from qkvjax import pretrained  # pylint: disable=g-import-not-at-top
  from qkvjax.pretrained import analysis  # pylint: disable=g-import-not-at-top
  got, ids = _checked(config, results_dir)
  model = pretrained.build(got)
  run_dir = rundir.RunDir.create(results_dir, "pretrained")
  run_dir.write_json("config.json", {
      "experiment": "pretrained", "config": config.to_dict(), "status": "running",
      "checkpoint": pretrained.describe(got), **results.provenance()})
  analysis.measure(model, ids, config.text.num_samples, run_dir / "metrics.jsonl")
  run_dir.set_status("complete")
  finish(run_dir.path)
  return run_dir.path


# ---- the saved run (``qkvjax.pretrained.saved``) -------------------------------------
def claims(s: Saved) -> list[dict]:
  out = [claim_kinds.k_index(
      "per layer (n = layers): effective rank of W_K^h minus that of W_Q^h, mean over heads; "
      "smallest effect of interest 1 dimension, as in --exp=specialization", Saved.k_minus_q)]
  if s.arch["causal"]:
    out.append(Claim("autoregressive training makes W_Q W_K^T directional (column-dominant)",
                     "autoregressive training results in directionality and column dominance",
                     "saponati2025", "per layer (n = layers): directionality of W_Q W_K^T (sum "
                     "over heads; < 0: dominant columns); smallest effect 0.1, under a fifth of "
                     "the published decoders' -0.32 to -0.65",
                     lambda s: s.per_layer("directionality"), stats.Less(0.0, 0.1)))
  else:
    out.append(Claim("bidirectional training makes W_Q W_K^T symmetric",
                     "bidirectional training induces symmetry in the weight matrices",
                     "saponati2025", "per layer (n = layers): symmetry score of W_Q W_K^T (sum "
                     "over heads); random Gaussian matrices score about 0; smallest effect 0.1, "
                     "about a quarter of the published gap between bert-base (0.51) and gpt2 "
                     "(0.15)", lambda s: s.per_layer("symmetry"), stats.Greater(0.0, 0.1)))
  out += [claim_kinds.v_closest(
      site, f"layer {site[1:]}, per text sample: linear CKA(V, word embedding) minus the "
      "larger of CKA(Q, ·) and CKA(K, ·); smallest effect 0.02, as in --exp=specialization",
      lambda s, site=site: s.v_margin(site)) for site in (s.layers if s.text_rows else [])]
  return study.judge(out, s)


def summary(s: Saved) -> dict:
  first = ("symmetry/", "directionality/", "ov_copying/")
  return {"experiment": "pretrained", "status": s.saved.get("status", "complete"),
          "checkpoint": s.saved["checkpoint"], "claims": claims(s),
          "weights": {k: v for k, v in s.weights.items() if k.startswith(first)},
          "weights_other": {k: v for k, v in s.weights.items()
                            if k.startswith("eff_rank/")},
          "text": {k: {**stats.describe(s.text(k)), "per_sample": s.text(k)}
                   for k in (s.text_rows[0] if s.text_rows else {})
                   if k not in ("phase", "step", "seed", "sample")},
          "text_samples": len(s.text_rows)}


# ---- figures and report --------------------------------------------------------------
def heatmaps(s: Saved):
  grids = {"symmetry of $W_Q^h W_K^{hT}$": (s.grid("symmetry"), -1, 1, "RdBu_r"),
           "directionality": (s.grid("directionality"), -1, 1, "RdBu_r"),
           "OV copying score": (s.grid("ov_copying"), -1, 1, "RdBu_r")}
  if s.text_rows:
    grids["attention entropy / log(#keys)"] = (s.grid("attn_entropy"), 0, 1, "Blues")
  return plotting.layer_head_heatmaps(grids, s.layers, f"{s.saved['checkpoint']['spec']}: "
                                      "per layer and head")


def layer_curves(s: Saved):
  x = np.arange(len(s.layers))
  fig, axes = plt.subplots(1, 3 if s.text_rows else 2, figsize=(10, 2.8), squeeze=False)
  ax = axes[0][0]
  for key, color in (("symmetry", "#9467bd"), ("directionality", "#8c564b")):
    ax.plot(x, s.per_layer(key), "o-", color=color, label=f"{key} (sum over heads)")
    grid = s.grid(key)
    ax.fill_between(x, *np.percentile(grid, [25, 75], 1), color=color, alpha=0.2, lw=0)
    ax.plot(x, np.median(grid, 1), ":", color=color, label=f"{key}: median head (IQR)")
  ax.axhline(0, color="0.5", lw=0.8)
  ax.set(xlabel="layer", title="$W_Q W_K^T$ structure")
  ax.legend(frameon=False, fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
  for name in QKV:
    axes[0][1].plot(x, s.per_layer("eff_rank", f"/{name}"), "o-",
                    color=plotting.MATRIX_COLORS[name], label=plotting.MATRIX_LABELS[name])
  axes[0][1].set(xlabel="layer", title="effective rank")
  axes[0][1].legend(frameon=False)
  if s.text_rows:
    for name in QKV:
      v = np.stack([s.cka(site)[name] for site in s.layers], 1)
      plotting.band(axes[0][2], x, v, plotting.MATRIX_COLORS[name], plotting.MATRIX_LABELS[name])
    axes[0][2].set(xlabel="layer", title="linear CKA with the word embedding")
    axes[0][2].legend(frameon=False)
    fig.text(0.99, 0.0, f"CKA: mean ± 1 std over {len(s.text_rows)} text samples",
             ha="right", fontsize=7, color="0.4")
  fig.tight_layout()
  return fig


def tables(s: Saved) -> list[str]:
  w = lambda key: lambda site: report.fmt(s.weights[key.format(site)])
  med = lambda key: lambda site: report.fmt(float(np.median(s.grid(key)[s.layers.index(site)])))
  cka = {f"CKA({n[0].upper()}, emb)": lambda site, n=n: report.fmt(float(np.mean(
      s.cka(site)[n]))) for n in QKV} if s.text_rows else {}
  lines = ["## Per layer", ""] + report.spec_table({
      "layer": str, "symmetry": w("symmetry/{}"), "directionality": w("directionality/{}"),
      "median head symmetry": med("symmetry"), "median head copying": med("ov_copying"),
      "eff. rank W_Q": w("eff_rank/{}/query"), "W_K": w("eff_rank/{}/key"),
      "W_V": w("eff_rank/{}/value"), **cka}, s.layers)
  name = s.saved["checkpoint"]["spec"]
  here = [[f"{name} (this run; median over layers)", "causal" if s.arch["causal"] else
           "bidirectional", report.fmt(float(np.median(s.per_layer("symmetry")))),
           report.fmt(float(np.median(s.per_layer("directionality")))), "measured here"]]
  return lines + ["", "## Beside the published values", "",
                  "Symmetry and directionality of W_Q W_K^T summed over a layer's heads, median "
                  "over layers; every number is from the model and source its row names.", ""
                  ] + report.structure_table(here) + [""]


def finish(run_dir) -> None:
  """summary.json, the figures and report.md from the saved files alone."""
  s = Saved(run_dir)
  summ = summary(s)
  results.write_json(s.dir / "summary.json", summ)
  spectra = lambda s: plotting.model_spectra(
      {site: {n: s.spectrum(site, n) for n in QKV} for site in s.layers})
  figures = {title: plotting.save(draw(s), s.dir, name) for title, draw, name in (
      ("Per layer and head", heatmaps, "heads"), ("Per layer", layer_curves, "layers"),
      ("Singular values of W_Q, W_K, W_V", spectra, "spectra"))} if plotting.FORMATS else {}
  text_note = (f"Text: {len(s.text_rows)} samples of {s.saved['config']['text']['passages']} "
               f"passages × {s.saved['config']['text']['seq_len']} tokens of the prose of "
               "CPython's documentation topics (`pydoc_data.topics`, Python Software "
               "Foundation License), cut with the checkpoint's own tokenizer."
               if s.text_rows else "**Text metrics skipped**: the checkpoint has no "
               "tokenizer.json, so only the weight-level scores were measured.")
  lines = [f"# qkvjax: the pretrained checkpoint {s.saved['checkpoint']['spec']}", "",
           saved.checkpoint_text(s.saved["checkpoint"]), "", text_note, "",
           "One trained model has no seeds: text-based effects are across text samples and "
           "weight-based ones across layers (the column n). " + report.HOW_TO_READ.replace(
               "Effects are across seeds: mean", "Effects: mean"), "",
           *report.claims_lines(summ["claims"], unit="n"), *tables(s)]
  lines += ["## Figures", ""] + report.figure_lines(figures) + report.redraw_lines(s.dir)
  results.write_atomic(s.dir / "report.md", "\n".join(lines))
