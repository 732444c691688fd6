"""Per-seed effects of a saved run that several studies' claims and figures
share (``qkvjax.pretrained.analysis``, by contrast, measures a pretrained model).

Every function reads a ``results.Run`` and returns one value per seed; the
attention *sites* (``L0``, ``decoder/L1/cross_attn``) say which blocks count.
"""

from __future__ import annotations

import dataclasses
from typing import Callable
import warnings

import numpy as np

from qkvjax import results
from qkvjax import stats
from qkvjax.attention import QKV

PAIRS = (("query", "key"), ("query", "value"), ("key", "value"))


def layers(run: results.Run) -> list[str]:
  """The attention sites of a decoder-only model, ``L0`` ... ``L<n_layers - 1>``."""
  return [f"L{l}" for l in range(run.config.model.n_layers)]


def site_mean(fn, sites) -> np.ndarray:
  """Per seed, the mean over sites of ``fn(site)``."""
  return np.mean([fn(s) for s in sites], 0)


def spectral_distance(run: results.Run, sites, index: int, **where) -> np.ndarray:
  """Per seed: the largest, over pairs of W_Q, W_K, W_V, mean over sites, of
  mean |s_a - s_b| / mean(s_a, s_b) between their singular-value spectra at
  logging point ``index``."""
  def one(site):
    s = {n: run.spectrum(f"{site}/{n}", index, **where) for n in QKV}
    return np.max([np.mean(np.abs(s[a] - s[b]), 1) / np.mean((s[a] + s[b]) / 2, 1)
                   for a, b in PAIRS], 0)
  return site_mean(one, sites)


def grad_ratio(run: results.Run, sites, **where) -> np.ndarray:
  """log10 of |grad W_V| / sqrt(|grad W_Q| |grad W_K|) at step 0, mean over
  sites: > 0 when V gets the larger gradient while attention is diffuse."""
  def one(site):
    g = {n: run.initial(f"grad_norm/{site}/{n}", **where) for n in QKV}
    return np.log10(g["value"] / np.sqrt(g["query"] * g["key"]))
  return site_mean(one, sites)


def cka_margin(run: results.Run, site: str, **where) -> np.ndarray:
  """Per seed, at the end: linear CKA(V, token embedding) minus the larger of
  CKA(Q, embedding) and CKA(K, embedding) at ``site``."""
  cka = {n: run.final(f"cka_embed/{site}/{n}", **where) for n in QKV}
  return cka["value"] - np.maximum(cka["query"], cka["key"])


def best_over(run: results.Run, keys, index: int, **where) -> tuple[np.ndarray, list]:
  """Per seed, the largest of ``keys`` at logging point ``index`` and which
  key it was (NaN and None for a seed with no finite value)."""
  table = np.stack([run.table(k, **where)[1][:, index] for k in keys], 1)
  filled = np.where(np.isfinite(table), table, -np.inf)
  best = np.max(filled, 1)
  which = [keys[i] if np.isfinite(b) else None for i, b in zip(np.argmax(filled, 1), best)]
  return np.where(np.isfinite(best), best, np.nan), which


def censor(run: results.Run) -> int:
  """The steps a seed that never reaches a threshold counts as: one logging
  interval past the end."""
  return run.config.steps + run.config.log_every


def steps_to(run: results.Run, key: str, threshold: float, **where) -> np.ndarray:
  """Per seed, the first logged step where ``key`` is >= ``threshold``
  (``censor(run)`` if never reached; ``stats.steps_to_threshold``)."""
  steps, values = run.table(key, **where)
  return stats.steps_to_threshold(steps, values, threshold, censor(run))


def steps_summary(values: np.ndarray, censor_at: int) -> dict:
  """``stats.describe`` of per-seed steps to a threshold, the values, and
  how many seeds reached it (below ``censor_at``)."""
  return {**stats.describe(values), "per_seed": values,
          "reached": int(np.sum(values < censor_at))}


def head_table(run: results.Run, prefix: str, names, heads: int, index: int,
               **where) -> np.ndarray:
  """[seeds, layers * heads, names] of ``prefix/<name>/L<l>/H<h>`` at logging
  point ``index``."""
  keys = [f"L{l}/H{h}" for l in range(run.config.model.n_layers) for h in range(heads)]
  return np.stack([np.stack([run.table(f"{prefix}/{n}/{k}", **where)[1][:, index]
                             for k in keys], 1) for n in names], -1)


def blocks(n: int) -> list[str]:
  """The attention sites ``L0`` ... ``L<n - 1>`` of an n-block model (where a
  run's conditions differ in depth, so ``layers`` does not apply)."""
  return [f"L{l}" for l in range(n)]


def stream(run: results.Run, prefix: str, n_blocks: int, **where) -> np.ndarray:
  """[seeds, n_blocks + 1] at step 0: ``prefix/X0`` (the input to the first
  block) ... ``prefix/X<n_blocks>`` (after the last;
  ``metrics.representation_metrics``)."""
  return np.stack([run.initial(f"{prefix}/X{l}", **where) for l in range(n_blocks + 1)], 1)


def grad_norm(run: results.Run, matrix: str, sites, **where) -> np.ndarray:
  """Per seed, the gradient norm of ``matrix`` (``query``, ``out``...) at step 0,
  mean over sites (``grad_norm/<site>/<matrix>``)."""
  return site_mean(lambda s: run.initial(f"grad_norm/{s}/{matrix}", **where), sites)


def over_heads(run: results.Run, name: str, **where) -> np.ndarray:
  """[seeds, steps] of a ``metrics.prediction_attention`` key ``name`` at the
  last layer, over its heads as ``metrics.attention.OVER_HEADS`` says (their
  mean, or the best head's)."""
  from qkvjax.metrics import attention  # pylint: disable=g-import-not-at-top
  site = f"L{run.config.model.n_layers - 1}"
  return run.table(f"{name}/{site}/{attention.OVER_HEADS[name]}", **where)[1]


def task_tables(run: results.Run) -> dict[str, dict]:
  """Per condition, the ``task.json`` tables (vocabulary, bars) of the task
  it trained on (its ``task`` override, or the run's only task)."""
  tables, saved = run.file("task.json"), run.saved.get("conditions") or {}
  only = next(iter(tables)) if len(tables) == 1 else None
  return {c: tables[(saved.get(c) or {}).get("task", only)] for c in run.conditions}


def slowdown(run: results.Run, key: str, threshold: float, condition: str,
             baseline: str) -> np.ndarray:
  """Per seed, log2 of the steps ``condition`` takes to reach ``threshold``
  of ``key`` over the steps ``baseline`` takes (``steps_to``; conditions
  share seed keys)."""
  return np.log2(steps_to(run, key, threshold, condition=condition)
                 / steps_to(run, key, threshold, condition=baseline))

def qkv_min(run: results.Run, prefix: str, site: str, index: int, **where) -> np.ndarray:
  """Per seed, the smallest over q, k, v of ``prefix/<site>/<name>`` at logging
  point ``index``."""
  return np.min([run.table(f"{prefix}/{site}/{n}", **where)[1][:, index] for n in QKV], 0)


def layer_mean(run: results.Run, what: str, **where) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, [seeds, steps])``: the mean over a decoder's layers (``layers``)
  of a per-site metric: ``prefix`` (``prefix/L<l>``), ``prefix/name``
  (``prefix/L<l>/name``) or ``grad_qk``, the geometric mean of the W_Q and W_K
  gradient norms sqrt(|grad W_Q| |grad W_K|)."""
  def site(s):
    if what == "grad_qk":
      return np.sqrt(run.table(f"grad_norm/{s}/query", **where)[1]
                     * run.table(f"grad_norm/{s}/key", **where)[1])
    return run.table(what.replace("/", f"/{s}/", 1) if "/" in what else f"{what}/{s}",
                     **where)[1]
  return run.table("loss", **where)[0], site_mean(site, layers(run))


# How ``reduce_steps`` reduces [seeds, steps] to [seeds].
REDUCE = {"final": lambda v: v[:, -1], "first": lambda v: v[:, 0],
          "peak": lambda v: np.max(v, 1), "growth": lambda v: log_growth(v[:, 0], v[:, -1])}


def reduce_steps(values_SxN: np.ndarray, how: str = "final") -> np.ndarray:
  """[seeds]: per seed, the last value (``"final"``), the value at step 0
  (``"first"``), the largest over the logged steps (``"peak"``) or
  log10(last / first) (``"growth"``, ``log_growth``)."""
  return REDUCE[how](values_SxN)


def finite_mean(x: np.ndarray, axis: int = 1) -> np.ndarray:
  """The mean over ``axis`` of the finite values (a diverged run's NaN
  skipped), without all-NaN warnings."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(x, axis)


def log_growth(first: np.ndarray, end: np.ndarray) -> np.ndarray:
  """log10(end / first) where both are > 0, else NaN."""
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where((first > 0) & (end > 0), np.log10(end / first), np.nan)


def metric(run: results.Run, what: str, **where) -> np.ndarray:
  """[seeds, steps] of ``what``: the key as logged (``loss``, ``diverged``),
  else its mean over layers (``layer_mean``: ``logit_std``, ``grad_qk``)."""
  if run.has(what, **where):
    return run.table(what, **where)[1]
  return layer_mean(run, what, **where)[1]


@dataclasses.dataclass(frozen=True)
class Grid:
  """A study's conditions as a grid of factors: ``pattern`` names the
  condition of one cell (``"{}/d{}/lr{}"``: variant, d_head, learning rate);
  ``values(run, what, **where)`` is [seeds, steps] of a metric in one."""
  pattern: str
  values: Callable[..., np.ndarray] = metric

  def name(self, *factors) -> str:
    """The condition of the cell ``factors``."""
    return self.pattern.format(*factors)

  def read(self, run: results.Run, what: str, *factors, reduce: str = "final",
           **where) -> np.ndarray:
    """[seeds]: ``what`` in the cell ``factors``, reduced over its steps
    (``reduce_steps``); a factor given as a list is swept, a column per value
    ([seeds, len(list)])."""
    for i, f in enumerate(factors):
      if isinstance(f, (list, tuple)):
        return np.stack([self.read(run, what, *factors[:i], v, *factors[i + 1:],
                                   reduce=reduce, **where) for v in f], 1)
    return reduce_steps(self.values(run, what, condition=self.name(*factors), **where), reduce)


def best_head(run: results.Run, prefix: str, index: int, **where) -> tuple[np.ndarray, list]:
  """Per seed, the largest per-head value ``<prefix><site>/H<h>`` over sites
  and heads at logging point ``index`` (``/mean`` keys left out), and which
  head it was, named ``L<l>/H<h>`` ("none" for a seed with no finite value)."""
  best, which = best_over(run, [k for k in run.keys(prefix) if not k.endswith("/mean")],
                          index, **where)
  name = lambda k: "/".join(p for p in k.split("/") if p[:1] in "LH" and p[1:].isdigit())
  return best, [name(k) if k else "none" for k in which]


def seeds_summary(values) -> dict:
  """``stats.describe`` of per-seed values (None, a diverged seed, counts as
  NaN) and the values themselves."""
  return {**stats.describe(np.asarray(values, float)), "per_seed": values}
