"""Reading a model's attention internals: ``Module.sow`` + ``nnx.capture``.

Every ``MultiHeadAttention`` sows an ``AttentionTrace`` named ``trace``;
blocks and models sow a few more arrays (``resid_in``, ``token_embed``,
``final_resid``). ``apply(model, *args)`` calls the model under
``nnx.capture`` and returns its output with a ``Captured``: the traces keyed
by attention *site* and the other arrays keyed by name, both with the short
names metrics use (``site_name``). Any NNX model whose attention is
``MultiHeadAttention`` exposes its internals the same way, with no code of its
own. Outside ``apply`` nothing is recorded.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from flax import nnx

from qkvjax.models.attention_block import AttentionTrace
from qkvjax.models.hyper import capturing

# Path components dropped from short names: the list holding a model's
# layers, and the attribute holding a layer's only attention block.
ELIDED = ("layers", "attn")


def site_name(path: tuple[Any, ...]) -> str:
  """A short name for a state path: an integer index i becomes ``L<i>`` and
  the components in ``ELIDED`` are dropped, so ``layers/0/attn/query`` is
  ``L0/query`` and ``decoder/1/cross_attn/key`` is ``decoder/L1/cross_attn/key``."""
  parts = [f"L{p}" if isinstance(p, int) else str(p) for p in path if p not in ELIDED]
  return "/".join(parts)


class Captured(NamedTuple):
  """Internals of one forward pass (the first call of each module)."""

  attention: dict[str, AttentionTrace]  # site ("L0", "decoder/L1/cross_attn") -> trace
  values: dict[str, jax.Array]          # "token_embed", "L0/resid_in", "final_resid", ...

  def layer_values(self, name: str) -> list[jax.Array]:
    """``L0/<name>``, ``L1/<name>``, ... in order (e.g. ``resid_in``)."""
    out, l = [], 0
    while f"L{l}/{name}" in self.values:
      out.append(self.values[f"L{l}/{name}"])
      l += 1
    return out


def capture_names(state: nnx.State) -> Captured:
  """A ``Captured`` from the ``nnx.Intermediate`` state ``nnx.capture`` returned."""
  attention, values = {}, {}
  for path, var in nnx.to_flat_state(state):
    first = var.get_value()[0]  # sow appends one entry per call
    if path[-1] == "trace":
      attention[site_name(path[:-1])] = first
    else:
      values[site_name(path)] = first
  return Captured(attention, values)


def apply(model: nnx.Module, *args, method: str | None = None, **kwargs):
  """``(output, Captured)`` of ``model(*args, **kwargs)`` (or of
  ``model.<method>(...)``)."""
  fn = model if method is None else getattr(model, method)
  with capturing():
    out, state = nnx.capture(fn, nnx.Intermediate)(*args, **kwargs)
  return out, capture_names(state)
