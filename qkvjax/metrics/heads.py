"""Which heads serve which relation, on the two-relation task.

``relation_heads`` (a metric group, inside the jit) logs, per site, head h and
relation r, the final position's attention on r's target (``share/r/L/H``)
and r's loss increase when h alone is ablated (``ablation/r/L/H``). The
host-side functions read such [seeds, heads, relations] profiles: how far
the relations' profiles over heads overlap, and how many heads carry each.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np

from qkvjax.metrics.attention import ablate_head
from qkvjax.tasks import base
from qkvjax.tasks.relations import RELATIONS

MIN_DAMAGE = 1e-3  # nats: below this total, a relation's ablation profile is undefined


def relation_heads(m) -> dict[str, jax.Array]:
  """On one fixed eval batch: loss and accuracy (per relation too); per site,
  head and relation, the final position's attention on the relation's target
  and the relation's loss increase when the head alone is ablated."""
  ev = m.eval_batch(m.config.eval_batch_size)
  loss, full, captured = m.forward(ev)
  out = {"eval_loss": loss, **{f"eval_{k}": v for k, v in full.items()}}
  for site, tr in captured.attention.items():
    w_BxSxH = jnp.swapaxes(tr.weights_BxHxTxS[:, :, -1], 1, 2)
    for r, pos_B in (("select", ev.target_pos_B), ("prev", ev.prev_pos_B)):
      share_H = jnp.mean(base.at_position(w_BxSxH, pos_B), 0)
      out.update({f"share/{r}/{site}/H{h}": share_H[h] for h in range(w_BxSxH.shape[2])})
    for h in range(w_BxSxH.shape[2]):
      ablated = m.forward(ev, params=ablate_head(m.params, site, h))[1]
      for r in RELATIONS:
        out[f"ablation/{r}/{site}/H{h}"] = ablated[f"loss/{r}"] - full[f"loss/{r}"]
  return out


def normalized(m_SxKxR: np.ndarray) -> np.ndarray:
  """Each relation's non-negative profile over heads, summing to 1; NaN
  where the relation's total is below ``MIN_DAMAGE``."""
  m = np.clip(m_SxKxR, 0.0, None)
  total_SxR = m.sum(1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total_SxR > MIN_DAMAGE, m / total_SxR, np.nan)


def separation(m_SxKxR: np.ndarray) -> np.ndarray:
  """Per seed, 1 - sum_h min(p_select(h), p_prev(h)): the share of the two
  relations' profiles over heads that does not overlap."""
  p = normalized(m_SxKxR)
  return 1.0 - np.sum(np.minimum(p[..., 0], p[..., 1]), 1)


def distinct_top_heads(d_SxKxR: np.ndarray) -> np.ndarray:
  """Per seed, 1 if the head whose ablation hurts ``select`` most is not the
  one that hurts ``prev`` most, else 0 (NaN for a diverged seed)."""
  top_SxR = np.argmax(np.nan_to_num(d_SxKxR, nan=-np.inf), 1)
  return np.where(np.all(np.isfinite(d_SxKxR), (1, 2)), top_SxR[:, 0] != top_SxR[:, 1], np.nan)


def participation(d_SxKxR: np.ndarray) -> np.ndarray:
  """[seeds, relations]: effective number of heads carrying each relation,
  1 / sum_h p_r(h)^2 of the normalized ablation profile."""
  return 1.0 / np.sum(normalized(d_SxKxR) ** 2, 1)


def head_roles(d_SxKxR: np.ndarray) -> list[str | None]:
  """Per seed, the assignment pattern: each head is 'select', 'prev', 'both'
  or 'neither' by whether its share of each relation's ablation damage is at
  least its uniform share 1/K; the pattern counts heads per role."""
  p, k, out = normalized(d_SxKxR), d_SxKxR.shape[1], []
  names = ("neither", "prev", "select", "both")  # by (takes select, takes prev) as bits
  for p_KxR in p:
    roles = collections.Counter(names[2 * a + b] for a, b in p_KxR >= 1.0 / k - 1e-9)
    out.append(", ".join(f"{roles[r]} {r}" for r in ("select", "prev", "both", "neither")
                         if roles[r]) if np.all(np.isfinite(p_KxR)) else None)
  return out


def profile_stats(share_SxKxR: np.ndarray, share_init_SxKxR: np.ndarray,
                  damage_SxKxR: np.ndarray) -> dict[str, np.ndarray]:
  """Per seed: the separation of the attention share (at the end and at
  init) and of the ablation damage, whether the top heads differ, and the
  effective heads per relation."""
  n_eff_SxR = participation(damage_SxKxR)
  return {"separation_attn": separation(share_SxKxR),
          "separation_attn_init": separation(share_init_SxKxR),
          "separation_ablation": separation(damage_SxKxR),
          "distinct_top_heads": distinct_top_heads(damage_SxKxR),
          "n_eff_select": n_eff_SxR[:, 0], "n_eff_prev": n_eff_SxR[:, 1]}


def modal_pattern(patterns: list[str | None]) -> tuple[str | None, float | None]:
  """The most common ``head_roles`` pattern and the share of finite seeds with it."""
  counts = collections.Counter(p for p in patterns if p is not None)
  modal, modal_n = counts.most_common(1)[0] if counts else (None, 0)
  return modal, modal_n / sum(counts.values()) if modal else None
