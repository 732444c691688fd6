"""Signal propagation through attention: how logits, attention, gradients and
token representations look as d_head or depth grow, mostly at initialization.

Shared by ``--exp=scaling`` (logits and entropy versus d_head, with and without
1/sqrt(d_k)) and ``--exp=residual`` (representations and gradients versus
depth, with and without skip connections). Every function is pure and runs
inside the jitted, seed-vmapped measurement step; ``SignalTrainer`` swaps the
Trainer's full metric set for these few, so deep models stay cheap to measure,
and ``measure_at_init`` / ``measure_at_init_together`` measure every seed at
initialization in one compiled call (no training).

Representation keys use ``X<l>`` for the residual stream after ``l`` blocks
(``X0`` is the input embedding, token plus position); layer keys use ``L<l>``
for block ``l`` (0-based), as in ``qkvjax.metrics``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from qkvjax import attention
from qkvjax import metrics as metrics_lib
from qkvjax import model as model_lib
from qkvjax import tasks
from qkvjax import train

Metrics = metrics_lib.Metrics

# One-shot programs (initialization, a measurement) compile several times
# faster without XLA's backend optimizations and run about as fast at these
# sizes (init at depth 4: 7.6 s -> 1.5 s measured on 2 CPU cores).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def visible_mask(t: int, causal: bool) -> jax.Array:
  """Boolean [T, T]: which keys each query may attend to."""
  return attention.causal_mask(t) if causal else jnp.ones((t, t), bool)


def logit_std(logits_BxHxTxS: jax.Array, mask_TxS: jax.Array) -> jax.Array:
  """Standard deviation of the attention logits over the visible (query, key)
  pairs of every sequence and head, pooled."""
  m = jnp.broadcast_to(mask_TxS, logits_BxHxTxS.shape)
  n = jnp.sum(m)
  mean = jnp.sum(jnp.where(m, logits_BxHxTxS, 0.0)) / n
  var = jnp.sum(jnp.where(m, jnp.square(logits_BxHxTxS - mean), 0.0)) / n
  return jnp.sqrt(var)


def max_logit(logits_BxHxTxS: jax.Array, mask_TxS: jax.Array) -> jax.Array:
  """The largest visible attention logit (as ``metrics.attention_metrics``)."""
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


def rank_collapse(x_BxTxM: jax.Array) -> jax.Array:
  """Relative residual ||X - 1 xbar^T||_F / ||X||_F of each sequence's token
  matrix X [T, M], mean over the batch: 0 when every token is the same vector
  (rank collapse, Dong et al. 2021), near 1 for unrelated tokens."""
  centred_BxTxM = x_BxTxM - x_BxTxM.mean(1, keepdims=True)
  num_B = jnp.sqrt(jnp.sum(jnp.square(centred_BxTxM), (1, 2)))
  den_B = jnp.sqrt(jnp.sum(jnp.square(x_BxTxM), (1, 2)))
  return jnp.mean(num_B / (den_B + 1e-12))


def token_cosine(x_BxTxM: jax.Array, embed_BxTxM: jax.Array) -> jax.Array:
  """Mean over tokens of cos(representation, the token's own embedding)."""
  num_BxT = jnp.sum(x_BxTxM * embed_BxTxM, -1)
  den_BxT = jnp.linalg.norm(x_BxTxM, axis=-1) * jnp.linalg.norm(embed_BxTxM, axis=-1)
  return jnp.mean(num_BxT / (den_BxT + 1e-12))


def grad_norm_metrics(grads: model_lib.Params) -> Metrics:
  """Frobenius norm of the gradient of every named matrix (``grad_norm/L0/query``)."""
  return {f"grad_norm/{k}": jnp.sqrt(jnp.sum(jnp.square(g)))
          for k, g in metrics_lib.named_matrices(grads).items()}


def representations(trace: model_lib.Trace) -> list[jax.Array]:
  """The residual stream after 0, 1, ..., n_layers blocks: X0 ... X_L."""
  return [lt.resid_in_BxTxM for lt in trace.layers] + [trace.final_resid_BxTxM]


def attention_signal_metrics(trace: model_lib.Trace, causal: bool) -> Metrics:
  """Per layer: logit std, max logit and normalized entropy of attention."""
  out: Metrics = {}
  for l, lt in enumerate(trace.layers):
    mask_TxS = visible_mask(lt.attn_logits_BxHxTxT.shape[-1], causal)
    out[f"logit_std/L{l}"] = logit_std(lt.attn_logits_BxHxTxT, mask_TxS)
    out[f"max_logit/L{l}"] = max_logit(lt.attn_logits_BxHxTxT, mask_TxS)
    out[f"norm_entropy/L{l}"] = normalized_entropy(lt.attn_weights_BxHxTxT, mask_TxS)
  return out


def representation_metrics(trace: model_lib.Trace) -> Metrics:
  """Per representation X_l: cosine and linear CKA with the token embedding,
  and the rank-collapse measure."""
  out: Metrics = {}
  emb_BxTxM = trace.token_embed_BxTxM
  emb_NxM = emb_BxTxM.reshape(-1, emb_BxTxM.shape[-1])
  for l, x_BxTxM in enumerate(representations(trace)):
    out[f"embed_cos/X{l}"] = token_cosine(x_BxTxM, emb_BxTxM)
    out[f"embed_cka/X{l}"] = metrics_lib.linear_cka(x_BxTxM.reshape(emb_NxM.shape), emb_NxM)
    out[f"rank_collapse/X{l}"] = rank_collapse(x_BxTxM)
  return out


@dataclasses.dataclass
class SignalTrainer(train.Trainer):
  """A Trainer whose measurements are the signal-propagation metrics:
  loss, accuracy, per-layer attention statistics, per-representation
  similarity and rank collapse, and per-matrix gradient norms. Cheaper than
  the full ``metrics.all_metrics`` (no SVDs or eigenvalues), so it stays
  fast at depth 16. Initialization and measurement compile with
  ``FAST_COMPILE``; training chunks keep the Trainer's default."""

  init_compiler_options = FAST_COMPILE
  measure_compiler_options = FAST_COMPILE

  def measure_one(self, state: train.TrainState) -> Metrics:
    batch: tasks.Batch = self.batch(state)
    (loss, (logits_BxV, trace)), grads = jax.value_and_grad(
        self.loss_fn, has_aux=True)(state.params, batch)
    out: Metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits_BxV, -1) == batch.target_B),
        "diverged": state.diverged,
        "diverged_step": state.diverged_step,
    }
    out.update(attention_signal_metrics(trace, self.config.model.causal))
    out.update(representation_metrics(trace))
    out.update(grad_norm_metrics(grads))
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def measure_at_init(trainer: train.Trainer) -> dict[str, np.ndarray]:
  """The trainer's metrics at step 0 for every seed: one jitted, vmapped call
  over the seed keys, no training. Maps names to [num_seeds] arrays."""
  return jax.device_get(trainer.measure(trainer.init_states()))


def measure_at_init_together(
    trainers: dict[str, train.Trainer]) -> dict[str, dict[str, np.ndarray]]:
  """Several configs whose parameters have the same shapes (e.g. with and
  without skips) measured on the same initial states (the first trainer's)
  in one compiled program: paired per seed, and one compilation instead of
  one per config. Maps each trainer's name to its metrics ([num_seeds] arrays)."""
  first = next(iter(trainers.values()))
  measure = jax.jit(jax.vmap(lambda state: {name: t.measure_one(state)
                                            for name, t in trainers.items()}),
                    compiler_options=FAST_COMPILE)
  return jax.device_get(measure(first.init_states()))


def loglog_slope(x_N, y_SxN) -> np.ndarray:
  """Per seed (row), the least-squares slope of log(y) on log(x): the
  exponent p of y ~ x^p. NaN for a row with a non-positive or missing value."""
  lx = np.log(np.asarray(x_N, float))
  y = np.asarray(y_SxN, float)
  with np.errstate(divide="ignore", invalid="ignore"):
    ly = np.log(y)
  lx_c = lx - lx.mean()
  slope = (ly - ly.mean(1, keepdims=True)) @ lx_c / np.sum(lx_c**2)
  return np.where(np.all(np.isfinite(ly), 1), slope, np.nan)
