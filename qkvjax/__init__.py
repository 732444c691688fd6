"""qkvjax: how attention's W_Q, W_K and W_V specialize, measured in JAX/Flax.

``load_run_params(run_dir)`` and ``load_run_model(run_dir, condition, seed)``
give a finished (or checkpointed) run's trained Flax parameters and models.
"""


def __getattr__(name):
  # Lazy, so ``import qkvjax.interrupts`` does not start JAX.
  if name in ("load_run_params", "load_run_model"):
    from qkvjax import study  # pylint: disable=g-import-not-at-top
    return getattr(study, name)
  raise AttributeError(name)
