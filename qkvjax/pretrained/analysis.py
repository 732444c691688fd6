"""What ``--exp=pretrained`` measures on a loaded checkpoint.

On the weights alone, per layer and head (``weight_metrics``): symmetry and
directionality of M = W_Q^h (W_K^h)^T and of the layer's sum over heads
(``metrics.circuits``; Saponati et al. 2025), the OV copying score with the
model's own embedding and unembedding (Elhage et al. 2021; LayerNorm gains
left out), and the singular values and effective rank of W_Q, W_K, W_V. All
in the residual-stream basis of the checkpoint's raw weights.

On real text, per text sample (``text_metrics``): per layer, linear CKA
(Kornblith et al. 2019) and RSA of the Q, K and V vectors with the tokens'
word embeddings, the normalized attention entropy of each head, and, for a
decoder with an unembedding, the next-token loss. The text is the prose of
CPython's documentation topics (``qkvjax.tasks.text``), cut into passages
of whole tokens of the checkpoint's own tokenizer.
"""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from qkvjax import models
from qkvjax import results
from qkvjax.attention import QKV
from qkvjax.metrics import attention as attention_metrics
from qkvjax.metrics import circuits, similarity
from qkvjax.metrics.weights import effective_rank


@jax.jit
def _layer_scores(w_q_MxHxD, w_k_MxKxD, w_v_MxKxD, w_o_HxDxM, g_MxM):
  """One attention site's weight-level scores, keys without the site
  (``symmetry``, ``symmetry/H0``...; K = key/value heads). Compiled once for
  all the layers of a model."""
  m, h = w_q_MxHxD.shape[:2]
  out = {k.replace("/S", "", 1): v
         for k, v in circuits.qk_structure_scores(w_q_MxHxD, w_k_MxKxD, "S").items()}
  rep = h // w_k_MxKxD.shape[1]
  w_v_MxHxD = jnp.repeat(w_v_MxKxD, rep, axis=1)
  eye = jnp.eye(m)
  for i in range(h):
    out[f"ov_copying/H{i}"] = circuits.ov_copying_score(eye, w_v_MxHxD[:, i], w_o_HxDxM[i],
                                                         g_MxM)
  for name, w in zip(QKV, (w_q_MxHxD, w_k_MxKxD, w_v_MxKxD)):
    s = jnp.linalg.svd(w.reshape(m, -1), compute_uv=False)
    out[f"eff_rank/{name}"] = effective_rank(s)
    out[f"sv/{name}"] = s
    heads = jnp.repeat(w, rep, axis=1) if name != "query" else w
    for i in range(h):
      out[f"eff_rank/H{i}/{name}"] = effective_rank(
          jnp.linalg.svd(heads[:, i], compute_uv=False))
  return out


def _site_key(key: str, site: str) -> str:
  """``symmetry/H0`` -> ``symmetry/L0/H0``; ``eff_rank/H0/query`` -> ``eff_rank/L0/H0/query``."""
  metric, _, rest = key.partition("/")
  return f"{metric}/{site}" + (f"/{rest}" if rest else "")


def weight_metrics(model) -> dict[str, float]:
  """Every weight-level score of every layer and head, as Python floats
  (``symmetry/L0``, ``symmetry/L0/H3``, ``ov_copying/L0/H3``,
  ``eff_rank/L0/key``, ``eff_rank/L0/H3/key``, ``sv/L0/key/000``...)."""
  g_MxM = model.unembedding_matrix @ model.embedding_matrix  # W_U W_E
  out = {}
  for site, attn in circuits.attention_modules(model).items():
    w_v = attn.value[...]
    got = _layer_scores(attn.query[...], attn.key[...], w_v, attn.out[...], g_MxM)
    for key, value in jax.device_get(got).items():
      if key.startswith("sv/"):
        for i, s in enumerate(np.asarray(value)):
          out[f"sv/{site}/{key[3:]}/{i:03d}"] = float(s)
      else:
        out[_site_key(key, site)] = float(value)
  return out


def qk_layer_scores(metrics: dict[str, float], n_layers: int) -> dict[str, list[float]]:
  """Per layer (sum over heads): symmetry and directionality."""
  return {name: [metrics[f"{name}/L{l}"] for l in range(n_layers)]
          for name in ("symmetry", "directionality")}


# ---- text ---------------------------------------------------------------------------
def prose() -> str:
  """The prose of CPython's documentation topics (``qkvjax.tasks.text``:
  source and licence there), paragraphs joined, before lowercasing."""
  from qkvjax.tasks import text  # pylint: disable=g-import-not-at-top
  return "\n\n".join(text.prose_paragraphs())


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
  """The ids a tokenizer puts before and after a text ([CLS] ... [SEP] for
  BERT, <s> for Llama, nothing for GPT-2)."""
  framed = tokenizer.encode("word").ids
  bare = tokenizer.encode("word", add_special_tokens=False).ids
  for i in range(len(framed) - len(bare) + 1):
    if framed[i:i + len(bare)] == bare:
      return framed[:i], framed[i + len(bare):]
  return [], []


def passages(tokenizer, seq_len: int, n: int) -> np.ndarray:
  """``n`` passages [n, seq_len] of the prose, each the tokenizer's special
  tokens around a run of consecutive text tokens, runs spread evenly over the
  whole text (no overlap); ValueError if the text is too short."""
  tokenizer.no_truncation()  # a tokenizer.json may cut every input short (MiniLM: 128)
  tokenizer.no_padding()
  before, after = special_frame(tokenizer)
  body = seq_len - len(before) - len(after)
  ids = np.asarray(tokenizer.encode(prose(), add_special_tokens=False).ids)
  starts = np.linspace(0, len(ids) - body, n).astype(int)
  if body < 1 or len(ids) < n * body:
    raise ValueError(f"the text has {len(ids)} tokens; {n} passages of {body} need more")
  return np.stack([np.concatenate([before, ids[s:s + body], after]) for s in starts])


def text_metrics_fn(model):
  """A jitted function of token ids [B, T] -> per layer CKA and RSA of Q, K,
  V with the word embeddings (``cka_embed/L0/value``), per head normalized
  attention entropy (``attn_entropy/L0/H3``: 1 uniform, 0 one-hot), and
  ``loss`` (next-token cross-entropy) for a decoder with an unembedding."""
  lm = model.causal and model.arch.lm_head
  graphdef, state = nnx.split(model)

  @jax.jit
  def fn(state, ids_BxT):
    out_BxTxV, cap = models.apply(nnx.merge(graphdef, state), ids_BxT)
    got = similarity.embedding_similarity(types.SimpleNamespace(captured=cap))
    t = ids_BxT.shape[1]
    mask_TxS = attention_metrics.visible_mask(t, t, model.causal)
    for site, tr in cap.attention.items():
      for h in range(tr.weights_BxHxTxS.shape[1]):
        got[f"attn_entropy/{site}/H{h}"] = attention_metrics.normalized_entropy(
            tr.weights_BxHxTxS[:, h:h + 1], mask_TxS)
    if lm:
      got["loss"] = optax.softmax_cross_entropy_with_integer_labels(
          out_BxTxV[:, :-1], ids_BxT[:, 1:]).mean()
    return got
  return functools.partial(fn, state)


def measure(model, ids: np.ndarray | None, num_samples: int, path) -> None:
  """Writes ``metrics.jsonl``: the ``weights`` row, then (given passages) one
  ``text`` row per text sample of ``len(ids) / num_samples`` passages."""
  writer = results.MetricsWriter(path)
  try:
    weights = weight_metrics(model)
    writer.write(0, {k: np.array([v]) for k, v in weights.items()}, {"phase": "weights"})
    if ids is not None:
      fn = text_metrics_fn(model)
      for i, batch in enumerate(np.split(ids, num_samples)):
        row = {k: np.array([float(v)]) for k, v in fn(batch).items()}
        writer.write(0, {**row, "sample": np.array([i])}, {"phase": "text"})
  finally:
    writer.close()
