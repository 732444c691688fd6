"""Shared run plumbing for every training experiment: a fresh run directory
with its provenance, training with metrics streamed to ``metrics.jsonl``
under a progress bar, and a sample of attention maps for the figures."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np

from qkvjax import model as model_lib
from qkvjax import results
from qkvjax import train


def start_run(results_dir, exp: str, config, mesh=None, **extra: Any) -> pathlib.Path:
  """Creates ``results_dir/exp/<run_id>`` and writes ``config.json``."""
  run_dir = results.new_run_dir(results_dir, exp)
  results.write_json(run_dir / "config.json", {
      "experiment": exp, "config": config.to_dict(), **results.provenance(mesh), **extra})
  return run_dir


def train_and_log(trainer: train.Trainer, writer: results.MetricsWriter,
                  progress: bool = True, fields: dict[str, Any] | None = None,
                  desc: str | None = None) -> train.TrainState:
  """Trains ``trainer``'s seeds, appending each logging point to ``writer``
  (rows tagged with ``fields``, e.g. a condition name). Returns the final state."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  cfg = trainer.config
  bar = tqdm(total=cfg.steps, unit="step", disable=not progress, dynamic_ncols=True,
             desc=desc or f"{cfg.num_seeds} seeds")
  last, state = 0, None
  try:
    for step, metrics, state in train.train(trainer):
      writer.write(step, metrics, fields)
      bar.update(step - last)
      last = step
      bar.set_postfix(loss=f"{np.nanmean(metrics['loss']):.3f}",
                      acc=f"{np.nanmean(metrics['accuracy']):.2f}",
                      diverged=int(np.sum(metrics["diverged"])))
  finally:
    bar.close()
  return state


def first_finite_seed(state: train.TrainState) -> int:
  ok = np.flatnonzero(~np.asarray(state.diverged))
  return int(ok[0]) if ok.size else 0


def attention_sample(trainer: train.Trainer, state: train.TrainState,
                     seed: int | None = None) -> dict[str, Any]:
  """One sample sequence's attention maps from one seed's final parameters
  (the first seed that did not diverge, unless ``seed`` is given)."""
  seed = first_finite_seed(state) if seed is None else seed
  params = jax.tree.map(lambda x: np.asarray(x[seed]), state.params)
  batch = trainer.task.sample(jax.random.PRNGKey(10_000 + trainer.config.seed), 8)
  logits, trace = jax.jit(lambda p, t: model_lib.forward(p, t, trainer.config.model))(
      params, batch.tokens_BxT)
  vocab = trainer.task.vocab
  return {
      "seed": seed,
      "tokens": [vocab[t] for t in np.asarray(batch.tokens_BxT[0])],
      "target_pos": int(batch.target_pos_B[0]),
      "target": vocab[int(batch.target_B[0])],
      "predicted": vocab[int(np.argmax(logits[0, -1]))],
      "weights_LxHxTxS": np.stack([np.asarray(lt.attn_weights_BxHxTxT[0])
                                    for lt in trace.layers]),
  }
