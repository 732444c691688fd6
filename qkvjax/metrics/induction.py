"""Induction-head circuit scores (Elhage et al. 2021; Olsson et al. 2022;
Bietti et al. 2023), as pure functions of attention weights and matrices.

Conventions: activations are row vectors, so a head's QK circuit is
W_QK = W_Q W_K^T [M, M] (score of query x_q on key x_k: x_q W_QK x_k^T) and
its OV circuit is W_OV = W_V W_O [M, M] (it writes x W_OV). LayerNorm gains
are left out, as in Elhage et al.

- ``previous_token_score``, ``prefix_matching_score``: attention on the
  previous position, and on the token after the current token's previous
  occurrence, on Olsson et al.'s repeated random sequence;
- ``composition``: Q-, K- and V-composition between an earlier head's OV
  circuit and a later head (Elhage et al.); ``composition_baseline`` the same
  score for random matrices of the same shapes;
- ``copying_baseline``: the OV copying score (``metrics.circuits.ov_copying``,
  logged by the study: eigenvalues on the host) of random matrices;
- ``positional_recall``, ``token_recall``, ``copy_recall``: Bietti et al.'s
  memory-recall probes of layer 1's W_K (previous position), layer 2's W_K
  through layer 1's W_O W_V (token) and layer 2's W_O through the
  unembedding (copy).

``induction_metrics(...)`` is the metric group the study logs.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qkvjax import models
from qkvjax.metrics.circuits import attention_modules, copying_from_matrices
from qkvjax.tasks import induction as induction_task

PROBE_KEY = 30_000  # the repeated probe of a run is drawn from PRNGKey(PROBE_KEY + seed)


# ---- attention patterns on the repeated probe --------------------------------------
def previous_token_score(weights_BxHxTxS) -> jax.Array:
  """Per head [H], mean attention of positions t >= 1 on t - 1."""
  t = weights_BxHxTxS.shape[-2]
  idx = jnp.arange(1, t)
  return jnp.mean(weights_BxHxTxS[:, :, idx, idx - 1], axis=(0, 2))


def prefix_matching_score(weights_BxHxTxS, half: int) -> jax.Array:
  """Per head [H], on a sequence of ``half`` tokens repeated: mean attention
  of the second copy's positions t on t - half + 1, the token that followed
  the current token last time (Olsson et al.)."""
  idx = jnp.arange(half, 2 * half)
  return jnp.mean(weights_BxHxTxS[:, :, idx, idx - half + 1], axis=(0, 2))


def uniform_attention_scores(half: int) -> dict[str, float]:
  """Both scores of uniform causal attention: the no-structure baseline."""
  prev = np.mean([1 / (t + 1) for t in range(1, 2 * half)])
  prefix = np.mean([1 / (t + 1) for t in range(half, 2 * half)])
  return {"previous_token": float(prev), "prefix_matching": float(prefix)}


# ---- circuits ------------------------------------------------------------------------
def qk_circuit(w_q_MxD, w_k_MxD):
  return w_q_MxD @ w_k_MxD.T


def ov_circuit(w_v_MxD, w_o_DxM):
  return w_v_MxD @ w_o_DxM


def _ratio(product, a, b):
  norm = lambda x: jnp.sqrt(jnp.sum(x * x))
  return norm(product) / (norm(a) * norm(b) + 1e-30)


def composition(w_ov1_MxM, w_qk2_MxM, w_ov2_MxM) -> dict[str, jax.Array]:
  """Elhage et al.'s composition of an earlier head (its OV circuit) with a
  later one: ||A B|| / (||A|| ||B||) for Q (the later query reads the earlier
  output: W_OV1 W_QK2), K (its key does: W_QK2 W_OV1^T) and V (its value
  does: W_OV1 W_OV2). 1 when one's output space is the other's input space,
  0 when orthogonal."""
  return {"q": _ratio(w_ov1_MxM @ w_qk2_MxM, w_ov1_MxM, w_qk2_MxM),
          "k": _ratio(w_qk2_MxM @ w_ov1_MxM.T, w_ov1_MxM, w_qk2_MxM),
          "v": _ratio(w_ov1_MxM @ w_ov2_MxM, w_ov1_MxM, w_ov2_MxM)}


def composition_baseline(d_model: int, d_head: int, draws: int = 200, seed: int = 0) -> float:
  """Mean composition score of independent Gaussian W_Q, W_K, W_V, W_O of
  these shapes (numpy, on the host): the score of heads that do not
  compose. Q, K and V scores share this law (a product of two independent
  rank-``d_head`` matrices), so one number serves all three."""
  rng = np.random.default_rng(seed)
  g = lambda *s: rng.standard_normal(s)
  out = []
  for _ in range(draws):
    ov1 = g(d_model, d_head) @ g(d_head, d_model)
    qk2 = g(d_model, d_head) @ g(d_model, d_head).T
    out.append(np.linalg.norm(qk2 @ ov1.T) / (np.linalg.norm(qk2) * np.linalg.norm(ov1)))
  return float(np.mean(out))


def copying_baseline(vocab: int, d_model: int, d_head: int, draws: int = 200,
                     seed: int = 0) -> float:
  """Mean copying score of Gaussian W_E, W_V, W_O, W_U of these shapes."""
  rng = np.random.default_rng(seed)
  g = lambda *s: rng.standard_normal(s)
  def ov(w_e, w_v, w_o, w_u):  # the D x D matrix with the OV circuit's nonzero eigenvalues
    return w_o @ w_u @ w_e @ w_v
  mats = np.stack([ov(g(vocab, d_model), g(d_model, d_head), g(d_head, d_model),
                      g(d_model, vocab)) for _ in range(draws)])
  return float(np.mean(copying_from_matrices(mats)))


# ---- Bietti et al.'s memory-recall probes ---------------------------------------------
def _recall(scores_NxN, mask_NxN=None):
  """Share of rows whose argmax is the diagonal."""
  if mask_NxN is not None:
    scores_NxN = jnp.where(mask_NxN, scores_NxN, -jnp.inf)
  return jnp.mean(jnp.argmax(scores_NxN, -1) == jnp.arange(scores_NxN.shape[0]))


def positional_recall(w_q_MxD, w_k_MxD, pos_TxM) -> jax.Array:
  """Layer 1's W_K as a memory of previous positions: the share of
  positions t >= 1 whose query p_t W_Q scores the key of p_{t-1} highest
  among keys s <= t."""
  scores_TxT = (pos_TxM @ w_q_MxD) @ (pos_TxM @ w_k_MxD).T
  t = pos_TxM.shape[0]
  shifted = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores_TxT, -jnp.inf)[1:, :]
  return jnp.mean(jnp.argmax(shifted, -1) == jnp.arange(t - 1))


def token_recall(w_q_MxD, w_k_MxD, w_ov1_MxM, w_e_VxM) -> jax.Array:
  """Layer 2's W_K as a memory read through layer 1's OV circuit: the share
  of tokens k whose query e_k W_Q scores highest the key of the position
  after k, which holds e_k W_OV1 (what layer 1 wrote)."""
  q_VxD = w_e_VxM @ w_q_MxD
  k_VxD = w_e_VxM @ w_ov1_MxM @ w_k_MxD
  return _recall(q_VxD @ k_VxD.T)


def copy_recall(w_v_MxD, w_o_DxM, w_e_VxM, w_u_MxV) -> jax.Array:
  """Layer 2's W_O (through W_V) as a memory read by the unembedding: the
  share of tokens whose attended embedding e_k W_V W_O has k as its top logit."""
  return _recall(w_e_VxM @ w_v_MxD @ w_o_DxM @ w_u_MxV)


# ---- per model ------------------------------------------------------------------------
def heads(model) -> list[tuple[str, object]]:
  """(site, attention module) of every layer, in depth order."""
  return sorted(attention_modules(model).items(), key=lambda kv: int(kv[0][1:]))


def circuit_scores(model, composition_scores: bool = True) -> dict[str, jax.Array]:
  """Composition of every layer-1 head with every layer-2 head
  (``k_comp/L0H{i}/L1H{j}``...) and the three recall probes (best head)."""
  sites = heads(model)
  w_e, w_u = model.embedding_matrix, model.unembedding_matrix
  out = {}
  (s1, a1) = sites[0]
  wq1, wk1 = a1.matrix("query"), a1.matrix("key")
  out["recall/previous_position"] = jnp.max(jnp.stack(
      [positional_recall(wq1[:, h], wk1[:, h], model.position_matrix)
       for h in range(a1.n_heads)]))
  if len(sites) < 2:
    # A 1-layer model: the copy probe reads its only layer.
    out["recall/copy"] = jnp.max(jnp.stack([copy_recall(a1.matrix("value")[:, h], a1.out[h],
                                                        w_e, w_u) for h in range(a1.n_heads)]))
    return out
  (s2, a2) = sites[1]
  ov1 = [ov_circuit(a1.matrix("value")[:, h], a1.out[h]) for h in range(a1.n_heads)]
  wq2, wk2, wv2 = a2.matrix("query"), a2.matrix("key"), a2.matrix("value")
  ov1_sum = sum(ov1)
  out["recall/token"] = jnp.max(jnp.stack([token_recall(wq2[:, h], wk2[:, h], ov1_sum, w_e)
                                           for h in range(a2.n_heads)]))
  out["recall/copy"] = jnp.max(jnp.stack([copy_recall(wv2[:, h], a2.out[h], w_e, w_u)
                                          for h in range(a2.n_heads)]))
  if composition_scores:
    for j in range(a2.n_heads):
      qk2, ov2 = qk_circuit(wq2[:, j], wk2[:, j]), ov_circuit(wv2[:, j], a2.out[j])
      for i in range(a1.n_heads):
        for kind, v in composition(ov1[i], qk2, ov2).items():
          out[f"{kind}_comp/{s1}H{i}/{s2}H{j}"] = v
  return out


def position_kind_scores(logits_BxTxV, batch) -> dict[str, jax.Array]:
  """Loss and accuracy per position kind and the in-context-learning score
  (Olsson et al.: loss late in the context minus early; negative = the
  context helps): mean loss of the last eighth of positions minus that of
  an eighth centred at a tenth of the sequence."""
  ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, batch.target_BxT)
  hit_BxT = (jnp.argmax(logits_BxTxV, -1) == batch.target_BxT).astype(jnp.float32)
  t = ce_BxT.shape[1]
  w = max(1, t // 8)
  early = max(0, t // 10 - w // 2)
  return {"loss": jnp.mean(ce_BxT), "accuracy": jnp.mean(hit_BxT),
          **induction_task.kind_metrics(ce_BxT, hit_BxT, batch.kind_BxT),
          "icl_score": jnp.mean(ce_BxT[:, t - w:]) - jnp.mean(ce_BxT[:, early:early + w])}


def induction_metrics(eval_size: int, probe_size: int) -> Callable:
  """The metric group: on a fixed eval batch, per-kind losses and the ICL
  score (``eval/...``); on the repeated probe, each head's previous-token and
  prefix-matching scores and the probe's second-copy accuracy; the circuit
  scores (``circuit_scores``). A config's ``eval_batch`` and ``probe_batch``
  fields, where present, replace the sizes."""

  def fn(m) -> dict[str, jax.Array]:
    task, cfg = m.task, m.config
    batch = m.eval_batch(cfg.eval_batch if "eval_batch" in cfg else eval_size)
    probe_n = cfg.probe_batch if "probe_batch" in cfg else probe_size
    logits, _ = models.apply(m.model, batch.tokens_BxT)
    out = {f"eval/{k}": v for k, v in position_kind_scores(logits, batch).items()}
    probe_BxT = task.repeated(jax.random.PRNGKey(PROBE_KEY + cfg.seed), probe_n)
    logits, captured = models.apply(m.model, probe_BxT)
    half = task.probe_len
    hit_BxT = jnp.argmax(logits[:, half:-1], -1) == probe_BxT[:, half + 1:]
    out["probe/repeat_accuracy"] = jnp.mean(hit_BxT)
    for site, trace in captured.attention.items():
      prev = previous_token_score(trace.weights_BxHxTxS)
      prefix = prefix_matching_score(trace.weights_BxHxTxS, half)
      for h in range(prev.shape[0]):
        out[f"previous_token/{site}/H{h}"] = prev[h]
        out[f"prefix_matching/{site}/H{h}"] = prefix[h]
    out.update(circuit_scores(m.model))
    return out

  return fn


# ---- training curves of a saved run (numpy) -------------------------------------------
def steepest_drop(steps_N, values_SxN, window: int, skip: float):
  """Per seed (row): the step at the middle of the ``window`` logging points
  over which the curve falls fastest, and that fall's slope divided by the
  average slope from ``skip`` to the end (1 for a straight line; the number
  of windows in the run for a single step). Logging points before ``skip``
  are left out. Returns (drop_step [S], sharpness [S]); NaN for a seed that
  diverged or never falls."""
  steps_N = np.asarray(steps_N, float)
  keep = steps_N >= skip
  x_N, y_SxN = steps_N[keep], np.asarray(values_SxN, float)[:, keep]
  fall_SxW = (y_SxN[:, :-window] - y_SxN[:, window:]) / (x_N[window:] - x_N[:-window])
  best = np.argmax(np.where(np.isfinite(fall_SxW), fall_SxW, -np.inf), 1)
  rows = np.arange(y_SxN.shape[0])
  average = (y_SxN[:, 0] - y_SxN[:, -1]) / (x_N[-1] - x_N[0])
  with np.errstate(divide="ignore", invalid="ignore"):
    sharpness = np.where(average > 0, fall_SxW[rows, best] / average, np.nan)
  drop = (x_N[best] + x_N[best + window]) / 2
  ok = np.isfinite(y_SxN).all(1)
  return np.where(ok, drop, np.nan), np.where(ok, sharpness, np.nan)


def rise_step(steps_N, values_SxN, min_rise: float, censor: float) -> np.ndarray:
  """Per seed, the first logged step at which the curve has covered half of
  its rise from the first to the last logging point; ``censor`` when it rose
  by less than ``min_rise``, NaN if it diverged."""
  y_SxN = np.asarray(values_SxN, float)
  rise_S = y_SxN[:, -1] - y_SxN[:, 0]
  half_S = y_SxN[:, 0] + rise_S / 2
  hit_SxN = y_SxN >= half_S[:, None]
  first = np.asarray(steps_N, float)[np.argmax(hit_SxN, 1)]
  out = np.where(rise_S >= min_rise, first, censor)
  return np.where(np.isfinite(y_SxN).all(1), out, np.nan)
