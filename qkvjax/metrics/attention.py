"""Metrics of what attention does, read from the captured traces.

``target_attention`` needs a task whose batch names the ground-truth key
(``target_pos_B``) and predicts at the last position (selection, match);
``attention_signal`` works for any model. ``prediction_attention`` compares
the prediction position's attention on itself and on the target (on an eval
batch), and the symmetry of the scores. ``heldout_alignment`` measures an
encoder-decoder's cross-attention on a seq2seq task's held-out pairs (the
spelling task: ``heldout`` and ``alignment``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qkvjax import attention
from qkvjax.metrics.weights import cosine
from qkvjax.models import encoder_decoder, site_name
from qkvjax.tasks import base


def visible_mask(t: int, s: int, causal: bool) -> jax.Array:
  """Boolean [T, S]: which keys each query may attend to."""
  return attention.causal_mask(t, s) if causal else jnp.ones((t, s), bool)


def logit_std(logits_BxHxTxS: jax.Array, mask_TxS: jax.Array) -> jax.Array:
  """Standard deviation of the attention logits over the visible (query, key)
  pairs of every sequence and head, pooled."""
  m = jnp.broadcast_to(mask_TxS, logits_BxHxTxS.shape)
  n = jnp.sum(m)
  mean = jnp.sum(jnp.where(m, logits_BxHxTxS, 0.0)) / n
  var = jnp.sum(jnp.where(m, jnp.square(logits_BxHxTxS - mean), 0.0)) / n
  return jnp.sqrt(var)


def max_logit(logits_BxHxTxS: jax.Array, mask_TxS: jax.Array) -> jax.Array:
  """The largest visible attention logit."""
  return jnp.max(jnp.where(mask_TxS, logits_BxHxTxS, -jnp.inf))


def normalized_entropy(weights_BxHxTxS: jax.Array, mask_TxS: jax.Array) -> jax.Array:
  """Mean over query rows that see at least two keys of entropy / log(#keys):
  1 for uniform attention, 0 for one-hot (a saturated softmax)."""
  n_keys_T = jnp.sum(mask_TxS, -1)
  ent_BxHxT = -jnp.sum(jnp.where(mask_TxS, weights_BxHxTxS *
                                 jnp.log(weights_BxHxTxS + 1e-30), 0.0), -1)
  rows_T = n_keys_T > 1
  ratio_BxHxT = ent_BxHxT / jnp.log(jnp.maximum(n_keys_T, 2))
  return jnp.sum(jnp.where(rows_T, ratio_BxHxT, 0.0)) / (
      jnp.sum(rows_T) * ratio_BxHxT.shape[0] * ratio_BxHxT.shape[1])


def _causal(m) -> bool:
  return bool(getattr(m.model, "causal", False))


def attention_signal(m) -> dict[str, jax.Array]:
  """Per site: logit std, max logit and normalized entropy of attention."""
  out = {}
  for site, tr in m.captured.attention.items():
    t, s = tr.logits_BxHxTxS.shape[-2:]
    mask_TxS = visible_mask(t, s, _causal(m))
    out[f"logit_std/{site}"] = logit_std(tr.logits_BxHxTxS, mask_TxS)
    out[f"max_logit/{site}"] = max_logit(tr.logits_BxHxTxS, mask_TxS)
    out[f"norm_entropy/{site}"] = normalized_entropy(tr.weights_BxHxTxS, mask_TxS)
  return out


def target_attention(m) -> dict[str, jax.Array]:
  """At the prediction (last) position, per site and head: weight and logit
  margin on the ground-truth key, q.k cosine for the ground-truth key vs the
  other keys before the last, entropy; and the largest visible logit."""
  out = {}
  batch = m.batch
  b, t = batch.tokens_BxT.shape
  is_target_BxS = jnp.arange(t)[None, :] == batch.target_pos_B[:, None]
  is_other_BxS = (jnp.arange(t)[None, :] < t - 1) & ~is_target_BxS
  for site, tr in m.captured.attention.items():
    w_BxHxS = tr.weights_BxHxTxS[:, :, -1, :]
    z_BxHxS = tr.logits_BxHxTxS[:, :, -1, :]
    cos_BxSxH = cosine(tr.query_BxTxHxD[:, -1][:, None], tr.key_BxSxHxD)
    valid_TxS = visible_mask(t, t, _causal(m))
    max_logit_H = jnp.max(jnp.where(valid_TxS, tr.logits_BxHxTxS, -jnp.inf), axis=(0, 2, 3))
    tgt = is_target_BxS[:, None, :]
    z_target_BxH = jnp.sum(jnp.where(tgt, z_BxHxS, 0.0), -1)
    z_rest_BxH = jnp.max(jnp.where(tgt, -jnp.inf, z_BxHxS), -1)
    entropy_BxH = -jnp.sum(w_BxHxS * jnp.log(w_BxHxS + 1e-30), -1)
    for h in range(w_BxHxS.shape[1]):
      key = f"{site}/H{h}"
      out[f"attn_target/{key}"] = jnp.mean(jnp.sum(jnp.where(is_target_BxS, w_BxHxS[:, h],
                                                             0.0), -1))
      out[f"logit_margin/{key}"] = jnp.mean(z_target_BxH[:, h] - z_rest_BxH[:, h])
      out[f"qk_cos_related/{key}"] = jnp.mean(
          jnp.sum(jnp.where(is_target_BxS, cos_BxSxH[..., h], 0.0), -1))
      out[f"qk_cos_unrelated/{key}"] = jnp.sum(
          jnp.where(is_other_BxS, cos_BxSxH[..., h], 0.0)) / jnp.sum(is_other_BxS)
      out[f"attn_entropy/{key}"] = jnp.mean(entropy_BxH[:, h])
      out[f"max_logit/{key}"] = max_logit_H[h]
  return out


# ``prediction_attention``'s per-head metrics are also logged over the heads:
# their mean, or the best head's.
OVER_HEADS = {"attn_self": "mean", "attn_target": "best", "self_ge_target": "mean",
              "key_norm_ratio": "mean"}


def prediction_attention(m) -> dict[str, jax.Array]:
  """On one fixed eval batch: loss, accuracy, accuracy with uniform attention
  (scores times 0: no selection, values kept); per site, ||S - S^T|| / ||S|| of
  the scores (0 when W_K = W_Q); at the last position, per head and over heads
  (``OVER_HEADS``): attention on itself and on the target, P(own score >=
  target's), and ||k_target|| / ||k_self||."""
  ev = m.eval_batch(m.config.eval_batch_size)
  loss, task_metrics, captured = m.forward(ev)
  out = {"eval_loss": loss, "eval_accuracy": task_metrics["accuracy"],
         "uniform_attn/accuracy": m.forward(ev, attn_scale=0.0)[1]["accuracy"]}
  is_target_BxS = jnp.arange(ev.tokens_BxT.shape[1])[None, :] == ev.target_pos_B[:, None]
  on_target = lambda x_BxHxS: jnp.sum(jnp.where(is_target_BxS[:, None], x_BxHxS, 0.0), -1)
  for site, tr in captured.attention.items():
    s_BxHxTxS = tr.logits_BxHxTxS
    out[f"score_asym/{site}"] = (jnp.linalg.norm(s_BxHxTxS - jnp.swapaxes(s_BxHxTxS, -1, -2))
                                 / (jnp.linalg.norm(s_BxHxTxS) + 1e-12))
    w_BxHxS, z_BxHxS = tr.weights_BxHxTxS[:, :, -1], s_BxHxTxS[:, :, -1]
    k_norm_BxSxH = jnp.linalg.norm(tr.key_BxSxHxD, axis=-1)
    per_head_BxH = {
        "attn_self": w_BxHxS[:, :, -1], "attn_target": on_target(w_BxHxS),
        "self_ge_target": z_BxHxS[:, :, -1] >= on_target(z_BxHxS),
        "key_norm_ratio": (base.at_position(k_norm_BxSxH, ev.target_pos_B)
                           / (k_norm_BxSxH[:, -1] + 1e-12))}
    for name, v_BxH in per_head_BxH.items():
      v_H = jnp.mean(v_BxH, 0)
      out.update({f"{name}/{site}/H{h}": v_H[h] for h in range(v_H.shape[0])})
      out[f"{name}/{site}/{OVER_HEADS[name]}"] = (
          jnp.max if OVER_HEADS[name] == "best" else jnp.mean)(v_H)
  return out


def ablate_qk(m) -> dict[str, jax.Array]:
  """Loss and task metrics with every W_Q and W_K set to 0: every score is 0,
  attention is uniform, and what accuracy is left needs no selection."""
  ablated = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.zeros_like(x) if any(
          getattr(k, "key", None) in ("query", "key") for k in path) else x, m.params)
  loss, task_metrics, _ = m.forward(m.batch, params=ablated)
  return {"ablate_qk/loss": loss,
          **{f"ablate_qk/{k}": v for k, v in task_metrics.items()}}


def ablate_head(params, site: str, head: int):
  """``params`` with head ``head`` of attention ``site`` removed: its slice of
  W_O is zero, so its output never reaches the residual stream."""
  def one(path, x):
    name = site_name(tuple(k.key for k in path if hasattr(k, "key")))
    return x.at[head].set(0.0) if name == f"{site}/out" else x
  return jax.tree_util.tree_map_with_path(one, params)


def heldout_alignment(m) -> dict[str, jax.Array]:
  """Teacher-forced on every held-out word: loss, phoneme and word accuracy;
  per cross-attention site and head (and head mean), how monotonic the
  letter -> phoneme alignment is, and the attention entropy."""
  held = jax.tree.map(jnp.asarray, m.task.heldout)
  loss, task_metrics, cap = m.forward(held)
  out = {"heldout/loss": loss, **{f"heldout/{k}": v for k, v in task_metrics.items()}}
  for site in encoder_decoder.sites(m.config.model, [encoder_decoder.CROSS]):
    w_BxHxTxS = cap.attention[site].weights_BxHxTxS
    for h, w_BxTxS in [*enumerate(jnp.moveaxis(w_BxHxTxS, 1, 0)), ("mean", w_BxHxTxS.mean(1))]:
      head = h if h == "mean" else f"H{h}"
      out[f"cross_monotonic/{site}/{head}"], out[f"cross_entropy/{site}/{head}"] = (
          m.task.alignment(w_BxTxS, held))
  return out
