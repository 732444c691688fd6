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

import pathlib

import numpy as np

from qkvjax import config as config_lib
from qkvjax import plotting
from qkvjax import report
from qkvjax import results
from qkvjax import rundir
from qkvjax import stats
from qkvjax.metrics import circuits

plt = plotting.plt
QKV = plotting.QKV
QUOTE_V = "A token's V (Value) is most related to the token's initial embedding"
QUOTE_K = ("K is like an index that needs to summarize all the main features of a token, "
           "but Q focuses on querying a specific feature")


def _checked(config):
  """``(Loaded, passages or None)``: every check that needs no weight values."""
  from qkvjax import pretrained  # pylint: disable=g-import-not-at-top
  config_lib.require_at_least(config, ("text.num_samples",), 2)
  config_lib.require_at_least(config, ("text.passages",))
  config_lib.require_at_least(config, ("text.seq_len",), 8)
  got = pretrained.inspect(config.checkpoint)
  if got.tokenizer is not None:  # without one there is no text (an exported run's model)
    config_lib.require(config.text.seq_len <= got.arch.max_len, "text.seq_len",
                       config.text.seq_len, f"8..{got.arch.max_len} (the checkpoint's "
                       "longest input)")
  return got, pretrained.passages(got, config.text)


def check(config, results_dir) -> None:
  _checked(config)
  results.check_writable(results_dir, "pretrained")


def run(config, results_dir, progress: bool = True):
  """Loads, measures, writes the rows, then ``finish``."""
  del progress
  from qkvjax import pretrained  # pylint: disable=g-import-not-at-top
  from qkvjax.pretrained import analysis  # pylint: disable=g-import-not-at-top
  got, ids = _checked(config)
  results.check_writable(results_dir, "pretrained")
  model = pretrained.build(got)
  run_dir = rundir.RunDir.create(results_dir, "pretrained").path
  saved = {"experiment": "pretrained", "config": config.to_dict(), "status": "running",
           "checkpoint": pretrained.describe(got), **results.provenance()}
  results.write_json(run_dir / "config.json", saved)
  analysis.measure(model, ids, config.text.num_samples, run_dir / "metrics.jsonl")
  results.write_json(run_dir / "config.json", {**saved, "status": "complete"})
  finish(run_dir)
  return run_dir


# ---- the saved run -----------------------------------------------------------------
class Saved:
  """A pretrained run's files: the weights row, the text rows, the architecture."""

  def __init__(self, run_dir):
    self.dir = pathlib.Path(run_dir)
    self.saved = results.read_json(self.dir / "config.json")
    rows = results.read_metrics(self.dir / "metrics.jsonl")
    self.weights = next(r for r in rows if r.get("phase") == "weights")
    self.text_rows = [r for r in rows if r.get("phase") == "text"]
    self.arch = self.saved["checkpoint"]["architecture"]
    self.layers = [f"L{l}" for l in range(self.arch["n_layers"])]
    self.heads = range(self.arch["n_heads"])

  def text(self, key: str) -> np.ndarray:
    """Per text sample."""
    return np.array([r.get(key, np.nan) for r in self.text_rows], float)

  def grid(self, prefix: str) -> np.ndarray:
    """[layers, heads] of ``prefix/L<l>/H<h>`` (text metrics: mean over samples)."""
    get = lambda k: self.weights[k] if k in self.weights else np.nanmean(self.text(k))
    return np.array([[get(f"{prefix}/{s}/H{h}") for h in self.heads] for s in self.layers])

  def per_layer(self, prefix: str, suffix: str = "") -> np.ndarray:
    return np.array([self.weights[f"{prefix}/{s}{suffix}"] for s in self.layers])


def v_margin(s: Saved, site: str) -> np.ndarray:
  return s.text(f"cka_embed/{site}/value") - np.maximum(s.text(f"cka_embed/{site}/query"),
                                                        s.text(f"cka_embed/{site}/key"))


def claims(s: Saved) -> list[dict]:
  causal = s.arch["causal"]
  k_minus_q = np.mean([[s.weights[f"eff_rank/{l}/H{h}/key"]
                        - s.weights[f"eff_rank/{l}/H{h}/query"] for h in s.heads]
                       for l in s.layers], 1)
  rows = [("K is a broad index, Q a focused query", QUOTE_K, "division_of_labor",
           "per layer (n = layers): effective rank of W_K^h minus that of W_Q^h, mean over "
           "heads; smallest effect of interest 1 dimension, as in --exp=specialization",
           k_minus_q, stats.Greater(0.0, 1.0))]
  if causal:
    rows.append(("autoregressive training makes W_Q W_K^T directional (column-dominant)",
                 "autoregressive training results in directionality and column dominance",
                 "saponati2025", "per layer (n = layers): directionality of W_Q W_K^T (sum "
                 "over heads; < 0: dominant columns); smallest effect 0.1, under a fifth of "
                 "the published decoders' -0.32 to -0.65", s.per_layer("directionality"),
                 stats.Less(0.0, 0.1)))
  else:
    rows.append(("bidirectional training makes W_Q W_K^T symmetric",
                 "bidirectional training induces symmetry in the weight matrices",
                 "saponati2025", "per layer (n = layers): symmetry score of W_Q W_K^T (sum "
                 "over heads); random Gaussian matrices score about 0; smallest effect 0.1, "
                 "about a quarter of the published gap between bert-base (0.51) and gpt2 "
                 "(0.15)", s.per_layer("symmetry"), stats.Greater(0.0, 0.1)))
  if s.text_rows:
    rows += [(f"V stays closest to the token's embedding (layer {site[1:]})", QUOTE_V,
              "division_of_labor", f"layer {site[1:]}, per text sample: linear CKA(V, word "
              "embedding) minus the larger of CKA(Q, ·) and CKA(K, ·); smallest effect 0.02, "
              "as in --exp=specialization", v_margin(s, site), stats.Greater(0.0, 0.02))
             for site in s.layers]
  out = [{"claim": c, "quote": q, "source": src, "measured": m, **stats.evaluate(v, rule)}
         for c, q, src, m, v, rule in rows]
  stats.correct(out)
  return out


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
      v = np.stack([s.text(f"cka_embed/{site}/{name}") for site in s.layers], 1)
      plotting.band(axes[0][2], x, v, plotting.MATRIX_COLORS[name], plotting.MATRIX_LABELS[name])
    axes[0][2].set(xlabel="layer", title="linear CKA with the word embedding")
    axes[0][2].legend(frameon=False)
    fig.text(0.99, 0.0, f"CKA: mean ± 1 std over {len(s.text_rows)} text samples",
             ha="right", fontsize=7, color="0.4")
  fig.tight_layout()
  return fig


def spectra(s: Saved):
  fig, axes = plt.subplots(1, len(s.layers), figsize=(2.2 * len(s.layers), 2.4),
                           sharey=True, squeeze=False)
  for ax, site in zip(axes[0], s.layers):
    for name in QKV:
      sv = [v for k, v in sorted(s.weights.items()) if k.startswith(f"sv/{site}/{name}/")]
      ax.semilogy(np.arange(1, len(sv) + 1), sv, color=plotting.MATRIX_COLORS[name],
                  label=plotting.MATRIX_LABELS[name])
    ax.set(title=site, xlabel="index")
  axes[0][0].set_ylabel("singular value")
  axes[0][-1].legend(frameon=False)
  return fig


def tables(s: Saved) -> list[str]:
  med = lambda key, l: report.fmt(float(np.median(s.grid(key)[l])))
  rows = [[site, report.fmt(s.weights[f"symmetry/{site}"]),
           report.fmt(s.weights[f"directionality/{site}"]), med("symmetry", l),
           med("ov_copying", l)] + [report.fmt(s.weights[f"eff_rank/{site}/{n}"]) for n in QKV]
          + ([report.fmt(float(np.mean(s.text(f"cka_embed/{site}/{n}")))) for n in QKV]
             if s.text_rows else [])
          for l, site in enumerate(s.layers)]
  cols = ["layer", "symmetry", "directionality", "median head symmetry",
          "median head copying", "eff. rank W_Q", "W_K", "W_V"]
  lines = ["## Per layer", ""] + report.table(
      cols + (["CKA(Q, emb)", "CKA(K, emb)", "CKA(V, emb)"] if s.text_rows else []), rows)
  name = s.saved["checkpoint"]["spec"]
  here = [[f"{name} (this run; median over layers)", "causal" if s.arch["causal"] else
           "bidirectional", report.fmt(float(np.median(s.per_layer("symmetry")))),
           report.fmt(float(np.median(s.per_layer("directionality")))), "measured here"]]
  pub = [[m, kind, report.fmt(sym), report.fmt(d), "Saponati et al. (2025), the tables of "
          "the paper's repository"] for m, kind, sym, d in circuits.PUBLISHED_MEDIANS]
  return lines + ["", "## Beside the published values", "",
                  "Symmetry and directionality of W_Q W_K^T summed over a layer's heads, median "
                  "over layers; every number is from the model and source its row names.", ""
                  ] + report.table(["model", "objective", "symmetry", "directionality",
                                    "source"], here + pub) + [""]


def finish(run_dir) -> None:
  """summary.json, the figures and report.md from the saved files alone."""
  s = Saved(run_dir)
  summ = summary(s)
  results.write_json(s.dir / "summary.json", summ)
  figures = {"Per layer and head": plotting.save(heatmaps(s), s.dir, "heads"),
             "Per layer": plotting.save(layer_curves(s), s.dir, "layers"),
             "Singular values of W_Q, W_K, W_V": plotting.save(spectra(s), s.dir, "spectra")
             } if plotting.FORMATS else {}
  ck, a = s.saved["checkpoint"], s.arch
  text_note = (f"Text: {len(s.text_rows)} samples of {s.saved['config']['text']['passages']} "
               f"passages × {s.saved['config']['text']['seq_len']} tokens of the prose of "
               "CPython's documentation topics (`pydoc_data.topics`, Python Software "
               "Foundation License), cut with the checkpoint's own tokenizer."
               if s.text_rows else "**Text metrics skipped**: the checkpoint has no "
               "tokenizer.json, so only the weight-level scores were measured.")
  hub = ck.get("hub")  # runs saved before Hub ids have none
  via = (f" (Hugging Face Hub `{hub['repo_id']}` at `{hub['revision']}`, commit "
         f"`{hub['commit']}`)" if hub else "")
  lines = [f"# qkvjax: the pretrained checkpoint {ck['spec']}", "",
           f"Read from `{ck['where']}`{via}: {ck['model_type']} ({', '.join(ck['architectures'] or [])}), "
           f"{a['n_layers']} layers × {a['n_heads']} heads (key/value heads {a['n_kv_heads']}), "
           f"d_model {a['d_model']}, d_head {a['d_head']}, "
           f"{'causal' if a['causal'] else 'bidirectional'}; stored as "
           f"{', '.join(ck['stored_dtypes'])}, analysed in float32. Tensors not used: "
           f"{', '.join(ck['unused_tensors']) or 'none'} (pooler and buffers aside). "
           "Scores use the raw weights in the residual-stream basis (LayerNorm gains and "
           "biases left out).", "", text_note, "",
           "One trained model has no seeds: text-based effects are across text samples and "
           "weight-based ones across layers (the column n). " + report.HOW_TO_READ.replace(
               "Effects are across seeds: mean", "Effects: mean"), "",
           "## Claims", "", report.counts_line(summ["claims"]), ""]
  table = report.claims_table(summ["claims"])
  lines += [table[0].replace("| seeds |", "| n |")] + table[1:] + ["", "## Quotes tested", ""]
  lines += report.quote_lines(summ["claims"]) + [""] + tables(s)
  lines += ["## Figures", ""] + report.figure_lines(figures) + report.redraw_lines(s.dir)
  results.write_atomic(s.dir / "report.md", "\n".join(lines))
