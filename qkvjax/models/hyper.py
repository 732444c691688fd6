"""Per-run values a model reads but does not train.

A value that differs between the runs of one compiled program (an
initialization scale, an attention scale, a residual gain folded into the
vmapped run axis) arrives as a traced array and is kept as a ``Hyper``
variable: part of the model's state, so it is vmapped with the parameters
but never differentiated or updated (training differentiates ``nnx.Param``
only). A value shared by every run stays a Python number, so XLA folds it as
a constant and a run does not pay for a knob it does not sweep.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from flax import nnx


class Hyper(nnx.Variable):
  """A per-run constant of the model (not a parameter)."""


def hyper(value) -> "Hyper | float":
  """``Hyper(value)`` for an array (a value that differs across runs), else
  the Python float: a constant of the compiled program."""
  if isinstance(value, jax.Array):
    return Hyper(jnp.asarray(value, jnp.float32))
  return float(value)


def value_of(x):
  """The value of a ``hyper(...)`` result, as a traced array or a float."""
  return x[...] if isinstance(x, nnx.Variable) else x


def record(module: nnx.Module, name: str, value) -> None:
  """``module.sow`` an intermediate when the call runs under ``capturing()``
  (``capture.apply``), and nothing otherwise (so a plain call, e.g. a
  decoding loop, stays pure)."""
  if _CAPTURING.get():
    module.sow(nnx.Intermediate, name, value)


_CAPTURING = contextvars.ContextVar("qkvjax_capturing", default=False)


@contextlib.contextmanager
def capturing():
  """Within it, ``record`` sows: ``capture.apply`` runs the model in it."""
  token = _CAPTURING.set(True)
  try:
    yield
  finally:
    _CAPTURING.reset(token)
