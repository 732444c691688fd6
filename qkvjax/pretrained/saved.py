"""A saved ``--exp=pretrained`` run read back: the rows ``analysis.measure``
wrote (one ``weights`` row, one ``text`` row per text sample), the
checkpoint's architecture, and the per-layer readings of them that the
study's claims, figures and tables share. Needs numpy only (no model code).
"""

from __future__ import annotations

import pathlib

import numpy as np

from qkvjax import results
from qkvjax.attention import QKV


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

  def spectrum(self, site: str, name: str) -> list[float]:
    """The singular values of ``name`` (query, key, value) at ``site``, largest first."""
    return [v for k, v in sorted(self.weights.items()) if k.startswith(f"sv/{site}/{name}/")]

  def k_minus_q(self) -> np.ndarray:
    """Per layer: the effective rank of W_K^h minus that of W_Q^h, mean over heads."""
    return np.mean([[self.weights[f"eff_rank/{l}/H{h}/key"]
                     - self.weights[f"eff_rank/{l}/H{h}/query"] for h in self.heads]
                    for l in self.layers], 1)

  def cka(self, site: str) -> dict[str, np.ndarray]:
    """Per text sample, linear CKA of Q, K and V with the word embedding at ``site``."""
    return {n: self.text(f"cka_embed/{site}/{n}") for n in QKV}

  def v_margin(self, site: str) -> np.ndarray:
    """Per text sample: CKA(V, word embedding) minus the larger of CKA(Q, ·)
    and CKA(K, ·) at ``site``."""
    cka = self.cka(site)
    return cka["value"] - np.maximum(cka["query"], cka["key"])


def checkpoint_text(ck: dict) -> str:
  """What a run's checkpoint record (``pretrained.describe``, in
  ``config.json``) says, as the report states it: where it was read, its
  architecture, storage and unused tensors, and the basis the scores use."""
  a, hub = ck["architecture"], ck.get("hub")  # runs saved before Hub ids have no hub
  via = (f" (Hugging Face Hub `{hub['repo_id']}` at `{hub['revision']}`, commit "
         f"`{hub['commit']}`)" if hub else "")
  return (f"Read from `{ck['where']}`{via}: {ck['model_type']} "
          f"({', '.join(ck['architectures'] or [])}), {a['n_layers']} layers × "
          f"{a['n_heads']} heads (key/value heads {a['n_kv_heads']}), d_model {a['d_model']}, "
          f"d_head {a['d_head']}, {'causal' if a['causal'] else 'bidirectional'}; stored as "
          f"{', '.join(ck['stored_dtypes'])}, analysed in float32. Tensors not used: "
          f"{', '.join(ck['unused_tensors']) or 'none'} (pooler and buffers aside). Scores "
          "use the raw weights in the residual-stream basis (LayerNorm gains and biases left "
          "out).")
