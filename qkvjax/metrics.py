"""Metrics as pure functions returning flat ``dict[str, scalar]``.

Keys are slash paths: ``<metric>/L<layer>[/H<head>][/<matrix>]``. Everything
here runs inside the jitted, seed-vmapped measurement step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qkvjax import model as model_lib
from qkvjax import tasks

QKV = ("query", "key", "value")
Metrics = dict[str, jax.Array]


def _norm(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32))))


def _cos(a: jax.Array, b: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Cosine along the last axis."""
  num = jnp.sum(a * b, -1)
  return num / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + eps)


def named_matrices(params: model_lib.Params) -> dict[str, jax.Array]:
  """The matrices metrics are reported for, keyed ``embed`` or ``L0/query``."""
  out = {"embed": params["embed"], "pos_embed": params["pos_embed"],
         "unembed": params["unembed"]}
  for l, layer in enumerate(params["layers"]):
    for name in model_lib.ATTN_MATRICES:
      if name in layer:  # tied or absent projections are not parameters
        out[f"L{l}/{name}"] = layer[name]
  return out


def _head_slice(name: str, w: jax.Array, h: int) -> jax.Array:
  return w[h] if name == "out" else w[:, h]


def norm_metrics(params, init_params, grads, updates) -> Metrics:
  """Gradient and update norms, distance from init, per matrix and per head."""
  out: Metrics = {}
  p, p0 = named_matrices(params), named_matrices(init_params)
  g, u = named_matrices(grads), named_matrices(updates)
  for key in p:
    dist = _norm(p[key] - p0[key])
    out[f"grad_norm/{key}"] = _norm(g[key])
    out[f"update_norm/{key}"] = _norm(u[key])
    out[f"dist_init/{key}"] = dist
    out[f"rel_dist_init/{key}"] = dist / (_norm(p0[key]) + 1e-12)
    out[f"param_norm/{key}"] = _norm(p[key])
    if "/" in key:
      layer, name = key.split("/")
      for h in range(p[key].shape[0 if name == "out" else 1]):
        out[f"grad_norm/{layer}/H{h}/{name}"] = _norm(_head_slice(name, g[key], h))
  return out


def effective_rank(s: jax.Array) -> jax.Array:
  """exp(entropy) of the normalized singular values (Roy & Vetterli 2007)."""
  p = s / (jnp.sum(s) + 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(p + 1e-30), 0.0)))


def spectrum_metrics(params, init_params) -> Metrics:
  """Singular values and effective rank of each W_Q, W_K, W_V (as M x H*D),
  and the cosine between the cumulative updates W - W_init of each pair."""
  out: Metrics = {}
  for l, (layer, layer0) in enumerate(zip(params["layers"], init_params["layers"])):
    deltas = {}
    for name in (n for n in QKV if n in layer):
      w = layer[name].reshape(layer[name].shape[0], -1)
      s = jnp.linalg.svd(w, compute_uv=False)
      out[f"eff_rank/L{l}/{name}"] = effective_rank(s)
      for i in range(s.shape[0]):
        out[f"sv/L{l}/{name}/{i:03d}"] = s[i]
      deltas[name] = (layer[name] - layer0[name]).ravel()
    for a, b in (("query", "key"), ("query", "value"), ("key", "value")):
      if a not in deltas or b not in deltas:
        continue
      out[f"update_cos/L{l}/{a}_{b}"] = _cos(deltas[a], deltas[b])
  return out


def linear_cka(x_NxA: jax.Array, y_NxB: jax.Array) -> jax.Array:
  """Linear centered kernel alignment (Kornblith et al. 2019)."""
  x = x_NxA - x_NxA.mean(0)
  y = y_NxB - y_NxB.mean(0)
  xty = jnp.sum(jnp.square(x.T @ y))
  return xty / (jnp.sqrt(jnp.sum(jnp.square(x.T @ x)) *
                         jnp.sum(jnp.square(y.T @ y))) + 1e-12)


def rsa(x_NxA: jax.Array, y_NxB: jax.Array) -> jax.Array:
  """Representational similarity: Pearson correlation of the off-diagonal
  cosine-similarity matrices of two sets of vectors for the same N items."""
  def cos_matrix(z):
    z = z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-12)
    return z @ z.T
  n = x_NxA.shape[0]
  off = ~jnp.eye(n, dtype=bool)
  a = jnp.where(off, cos_matrix(x_NxA), 0.0)
  b = jnp.where(off, cos_matrix(y_NxB), 0.0)
  count = n * (n - 1)
  a_c = jnp.where(off, a - a.sum() / count, 0.0)
  b_c = jnp.where(off, b - b.sum() / count, 0.0)
  return jnp.sum(a_c * b_c) / (jnp.sqrt(jnp.sum(a_c**2) * jnp.sum(b_c**2)) + 1e-12)


def embedding_similarity_metrics(trace: model_lib.Trace) -> Metrics:
  """CKA and RSA between each layer's Q, K, V vectors and the token embedding."""
  out: Metrics = {}
  emb = trace.token_embed_BxTxM.reshape(-1, trace.token_embed_BxTxM.shape[-1])
  for l, lt in enumerate(trace.layers):
    for name, x in zip(QKV, (lt.query_BxTxHxD, lt.key_BxTxHxD, lt.value_BxTxHxD)):
      flat = x.reshape(emb.shape[0], -1)
      out[f"cka_embed/L{l}/{name}"] = linear_cka(flat, emb)
      out[f"rsa_embed/L{l}/{name}"] = rsa(flat, emb)
  return out


def _eigvals(m: jax.Array) -> jax.Array:
  """Eigenvalues of a small real matrix; host fallback where XLA lacks eig."""
  if jax.default_backend() in ("cpu", "gpu", "cuda", "rocm"):
    return jnp.linalg.eigvals(m)
  import numpy as np  # pylint: disable=g-import-not-at-top
  shape = jax.ShapeDtypeStruct(m.shape[:-1], jnp.complex64)
  return jax.pure_callback(lambda a: np.linalg.eigvals(a).astype(np.complex64),
                           shape, m, vmap_method="sequential")


def ov_copying_metrics(params, model_cfg) -> Metrics:
  """Copying score per head: sum(Re lambda) / sum(|lambda|) over eigenvalues
  of the OV circuit W_E W_V W_O W_U (Elhage et al. 2021). Its nonzero
  eigenvalues equal those of the D x D matrix W_O W_U W_E W_V, used here."""
  out: Metrics = {}
  w_e, w_u = params["embed"], params["unembed"]
  for l, layer in enumerate(params["layers"]):
    w_v = model_lib.value_matrix(layer, model_cfg)
    for h in range(w_v.shape[1]):
      small = layer["out"][h] @ w_u @ w_e @ w_v[:, h]
      lam = _eigvals(small)
      out[f"ov_copying/L{l}/H{h}"] = jnp.sum(lam.real) / (jnp.sum(jnp.abs(lam)) + 1e-12)
  return out


def attention_metrics(trace: model_lib.Trace, batch: tasks.Batch,
                      causal: bool) -> Metrics:
  """At the prediction (verb) position: weight and logit margin on the
  ground-truth key, q.k cosine for the related vs unrelated nouns, entropy;
  and the largest attention logit anywhere."""
  out: Metrics = {}
  b, t = batch.tokens_BxT.shape
  n_slots = t - 1
  is_target_BxS = jnp.arange(t)[None, :] == batch.target_pos_B[:, None]
  is_other_noun_BxS = (jnp.arange(t)[None, :] < n_slots) & ~is_target_BxS
  for l, lt in enumerate(trace.layers):
    w_BxHxS = lt.attn_weights_BxHxTxT[:, :, -1, :]
    z_BxHxS = lt.attn_logits_BxHxTxT[:, :, -1, :]
    q_BxHxD = lt.query_BxTxHxD[:, -1]
    cos_BxSxH = _cos(q_BxHxD[:, None], lt.key_BxTxHxD)
    valid = jnp.tril(jnp.ones((t, t), bool)) if causal else jnp.ones((t, t), bool)
    max_logit_H = jnp.max(jnp.where(valid, lt.attn_logits_BxHxTxT, -jnp.inf),
                          axis=(0, 2, 3))
    tgt = is_target_BxS[:, None, :]
    z_target_BxH = jnp.sum(jnp.where(tgt, z_BxHxS, 0.0), -1)
    z_rest_BxH = jnp.max(jnp.where(tgt, -jnp.inf, z_BxHxS), -1)
    entropy_BxH = -jnp.sum(w_BxHxS * jnp.log(w_BxHxS + 1e-30), -1)
    for h in range(w_BxHxS.shape[1]):
      key = f"L{l}/H{h}"
      out[f"attn_target/{key}"] = jnp.mean(jnp.sum(jnp.where(is_target_BxS, w_BxHxS[:, h], 0.0), -1))
      out[f"logit_margin/{key}"] = jnp.mean(z_target_BxH[:, h] - z_rest_BxH[:, h])
      out[f"qk_cos_related/{key}"] = jnp.mean(
          jnp.sum(jnp.where(is_target_BxS, cos_BxSxH[..., h], 0.0), -1))
      out[f"qk_cos_unrelated/{key}"] = jnp.sum(
          jnp.where(is_other_noun_BxS, cos_BxSxH[..., h], 0.0)) / jnp.sum(is_other_noun_BxS)
      out[f"attn_entropy/{key}"] = jnp.mean(entropy_BxH[:, h])
      out[f"max_logit/{key}"] = max_logit_H[h]
  return out


def all_metrics(*, params, init_params, grads, updates, trace, batch, logits_BxV,
                loss, model_cfg) -> Metrics:
  """Everything logged at a logging point, for one seed."""
  out: Metrics = {
      "loss": loss,
      "accuracy": jnp.mean(jnp.argmax(logits_BxV, -1) == batch.target_B),
  }
  out.update(norm_metrics(params, init_params, grads, updates))
  out.update(spectrum_metrics(params, init_params))
  out.update(embedding_similarity_metrics(trace))
  out.update(ov_copying_metrics(params, model_cfg))
  out.update(attention_metrics(trace, batch, model_cfg.causal))
  return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}
