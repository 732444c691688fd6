"""What every task provides, and the losses tasks share.

A task is a generated (or shipped) language with known ground truth. It
provides its vocabulary and sequence length, draws batches as a pure function
of a key (``sample``), names the arrays the model is called on
(``model_inputs``), scores the model's logits (``loss``: a scalar loss and
named task metrics such as ``accuracy``) and describes itself for the results
directory (``tables``, saved as ``task.json``). A batch is a NamedTuple whose
other fields are the ground truth (targets, and where the answer sits).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, jax.Array]


@runtime_checkable
class Task(Protocol):
  """The protocol every task in ``qkvjax.tasks`` implements."""

  name: str
  vocab: tuple[str, ...]  # output tokens (the model's vocabulary)

  @property
  def vocab_size(self) -> int: ...

  @property
  def seq_len(self) -> int: ...

  def sample(self, key: jax.Array, batch_size: int) -> Any:
    """A batch; a pure function of ``key``."""

  def model_inputs(self, batch) -> tuple[jax.Array, ...]:
    """The positional arguments of the model call for ``batch``."""

  def loss(self, logits, batch) -> tuple[jax.Array, Metrics]:
    """Mean loss and task metrics (at least ``accuracy``) of the logits."""

  def tables(self) -> dict[str, Any]:
    """Vocabulary and ground-truth tables, saved with a run as task.json."""


def at_position(x_BxTx___: jax.Array, pos_B: jax.Array) -> jax.Array:
  """Row b's entry at position ``pos_B[b]``: [B, ...]."""
  return x_BxTx___[jnp.arange(x_BxTx___.shape[0]), pos_B]


def cross_entropy(logits_BxV: jax.Array, target_B: jax.Array) -> tuple[jax.Array, Metrics]:
  """Mean cross-entropy and accuracy of one prediction per row."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits_BxV, target_B).mean()
  accuracy = jnp.mean(jnp.argmax(logits_BxV, -1) == target_B).astype(jnp.float32)
  return loss, {"accuracy": accuracy}
