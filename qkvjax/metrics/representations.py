"""The residual stream by depth: continuity with the token's embedding and
rank collapse. ``X<l>`` is the stream after ``l`` blocks (``X0``: the input,
token plus position embedding)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qkvjax.metrics.similarity import linear_cka


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


def representation_metrics(m) -> dict[str, jax.Array]:
  """Per stream X_l: cosine and linear CKA with the token embedding, and
  rank collapse (for models that sow ``token_embed``, ``L<l>/resid_in`` and
  ``final_resid``, as ``qkvjax.models.Transformer`` does)."""
  cap = m.captured
  if "token_embed" not in cap.values:
    return {}
  streams = cap.layer_values("resid_in") + [cap.values["final_resid"]]
  emb_BxTxM = cap.values["token_embed"]
  emb_NxM = emb_BxTxM.reshape(-1, emb_BxTxM.shape[-1])
  out = {}
  for l, x_BxTxM in enumerate(streams):
    out[f"embed_cos/X{l}"] = token_cosine(x_BxTxM, emb_BxTxM)
    out[f"embed_cka/X{l}"] = linear_cka(x_BxTxM.reshape(emb_NxM.shape), emb_NxM)
    out[f"rank_collapse/X{l}"] = rank_collapse(x_BxTxM)
  return out
