"""Samples a study saves after training (``Study.samples``), built once: what
they share is running one finished seed's model (or every seed's) on fixed
inputs; a study names the inputs and keeps what is particular to its task.
"""

from __future__ import annotations

import jax
import numpy as np

from qkvjax import models
from qkvjax import study
from qkvjax import train
from qkvjax.attention import QKV


def first_seed(trainer: train.Trainer, state: train.TrainState) -> int:
  """The first seed that did not diverge (of a one-condition run)."""
  return train.first_finite_run(state, list(range(trainer.config.num_seeds)))


def qkv_pca(trainer: train.Trainer, state: train.TrainState, seed: int, *inputs,
            position: int = -1) -> dict[str, np.ndarray]:
  """``seed``'s q, k, v at ``position`` of every row of ``inputs``, per
  attention site: their 2-D PCA coordinates over the vectors' RMS norm,
  ``{"<site>/<name>": [rows, 2]}``."""
  _, cap = models.apply(study.run_model(trainer, state, seed), *inputs)
  coords = {}
  for site, tr in cap.attention.items():
    for name, x in zip(QKV, (tr.query_BxTxHxD, tr.key_BxSxHxD, tr.value_BxSxHxD)):
      x_NxF = np.asarray(x[:, position], np.float64).reshape(x.shape[0], -1)
      centered = x_NxF - x_NxF.mean(0)
      vt = np.linalg.svd(centered, full_matrices=False)[2]
      coords[f"{site}/{name}"] = centered @ vt[:2].T / np.sqrt(np.mean(np.sum(x_NxF**2, -1)))
  return coords


def greedy_outputs(trainer: train.Trainer, state: train.TrainState, src, length: int,
                   bos: int) -> np.ndarray:
  """[seeds, rows, length]: every seed's greedy decoding of ``src`` (a model
  with ``greedy_decode``, such as ``models.EncoderDecoder``)."""
  decode = jax.jit(jax.vmap(lambda p, r: study.nnx_merge(trainer, p, r).greedy_decode(
      src, length, bos)))
  return np.asarray(decode(state.params, state.model_rest))[:trainer.config.num_seeds]


def attention_weights(trainer: train.Trainer, state: train.TrainState, seed: int, sites,
                      *inputs) -> np.ndarray:
  """[rows, sites, heads, queries, keys]: ``seed``'s attention weights at
  ``sites`` on ``inputs``."""
  _, cap = models.apply(study.run_model(trainer, state, seed), *inputs)
  return np.stack([np.asarray(cap.attention[s].weights_BxHxTxS) for s in sites], 1)
