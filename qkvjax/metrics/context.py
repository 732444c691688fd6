"""How an ambiguous word's q, k, v change with its context, on the context task.

``context_probe`` (a metric group, inside the jit) measures, on the task's
balanced probe set, per layer and representation (``REPS``: q, k, v and the
layer's input), the word's spread across contexts, the share of that spread
that separates its senses and a ridge probe's held-out sense accuracy, and
the attention the word pays to cue words.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qkvjax.attention import QKV
from qkvjax.metrics.similarity import linear_probe_accuracy

REPS = QKV + ("resid",)  # "resid": the layer's input (residual stream, before its LayerNorm)


def context_probe(m) -> dict[str, jax.Array]:
  """On the probe set: loss and accuracy, and per layer the ambiguous word's
  spread, sense share and probe accuracy for q, k, v and the layer input,
  and the attention it pays to cue words."""
  task, p = m.task, m.config.probe
  batch, fit_N = task.probe_set(m.eval_key(), p.replicates)
  loss, task_metrics, cap = m.forward(batch)
  out = {"probe_set_loss": loss, "probe_set_accuracy": task_metrics["accuracy"]}
  rows_N, pos_N = jnp.arange(len(fit_N)), batch.target_pos_B
  for l, resid_BxTxM in enumerate(cap.layer_values("resid_in")):
    tr = cap.attention[f"L{l}"]
    for name, x in zip(REPS, (tr.query_BxTxHxD, tr.key_BxSxHxD, tr.value_BxSxHxD,
                              resid_BxTxM)):
      x_NxF = x[rows_N, pos_N].reshape(len(fit_N), -1)
      out[f"ctx_spread/L{l}/{name}"], out[f"sense_share/L{l}/{name}"] = (
          task.context_variation(x_NxF, batch))
      out[f"probe_acc/L{l}/{name}"] = linear_probe_accuracy(x_NxF, batch.sense_B,
                                                            fit_N, p.ridge)
    cues_NxH = jnp.sum(jnp.where(batch.cue_BxT[:, None], tr.weights_BxHxTxS[rows_N, :, pos_N],
                                 0.0), -1)
    out[f"attn_cues/L{l}"] = jnp.mean(cues_NxH)
    out.update({f"attn_cues/L{l}/H{h}": jnp.mean(c) for h, c in enumerate(cues_NxH.T)})
  # What uniform attention over the visible positions would put on the cues.
  visible_NxS = jnp.arange(task.seq_len)[None] <= pos_N[:, None]
  out["attn_cues_uniform"] = jnp.mean(jnp.sum(batch.cue_BxT & visible_NxS, -1)
                                      / jnp.sum(visible_NxS, -1))
  return out
