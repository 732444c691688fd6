"""Experiments by name: ``configs/NAME.py``'s ``get_config(variant)``, the
module that runs it, and a saved run's config rebuilt from its ``config.json``.

The framework's end of the configs package: the library below it
(``qkvjax.config`` among it) never imports ``configs``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import ml_collections

from qkvjax.errors import ConfigError


def available_experiments() -> list[str]:
  import configs  # pylint: disable=g-import-not-at-top
  return sorted(m.name for m in pkgutil.iter_modules(configs.__path__)
                if not m.name.startswith("_"))


def experiment_module(exp: str):
  """The module ``--exp=exp`` runs: ``qkvjax.commands.<exp>`` for a command
  (``claims``, ``figures``), else ``qkvjax.studies.<exp>``; ImportError if
  neither exists."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  for package in ("qkvjax.commands", "qkvjax.studies"):
    if importlib.util.find_spec(f"{package}.{exp}") is not None:
      return importlib.import_module(f"{package}.{exp}")
  raise ImportError(f"no module qkvjax.commands.{exp} or qkvjax.studies.{exp}")


def variants(exp: str) -> tuple[str, ...]:
  """The ``arg`` values ``configs/<exp>.py``'s ``get_config(arg)`` accepts
  besides None (its ``VARIANTS``), e.g. ``("tiny",)``."""
  module = importlib.import_module(f"configs.{exp}")
  if not inspect.signature(module.get_config).parameters:
    return ()
  return tuple(getattr(module, "VARIANTS", ()))


def load_config(exp: str, variant: str | None = None) -> ml_collections.ConfigDict:
  """``configs/<exp>.py``'s ``get_config(variant)``; ConfigError naming the
  accepted experiments or variants (``--config=VARIANT`` on the command line)."""
  names = available_experiments()
  if exp not in names:
    raise ConfigError(f"unknown experiment {exp!r}; accepted: {', '.join(names)}")
  module = importlib.import_module(f"configs.{exp}")
  if variant is None:
    return module.get_config()
  accepted = variants(exp)
  if not inspect.signature(module.get_config).parameters:
    raise ConfigError(f"--config={variant!r}: experiment {exp!r} has no variants; accepted: "
                      "no --config flag")
  if accepted and variant not in accepted:
    raise ConfigError(f"unknown --config={variant!r} for experiment {exp!r}; accepted: "
                      f"{', '.join(accepted)}")
  try:
    return module.get_config(variant)
  except ValueError as e:  # a config without VARIANTS refuses it itself
    raise ConfigError(f"unknown --config={variant!r} for experiment {exp!r}: "
                      f"{str(e).splitlines()[0]}") from None


def from_saved(exp: str, saved: dict[str, Any], variant: str | None = None
               ) -> ml_collections.ConfigDict:
  """An experiment's config rebuilt from a saved ``config.json`` dict: the
  defaults of the experiment's ``variant`` (the one the run recorded) with
  the saved values set, lists back to tuples."""
  config = load_config(exp, variant)

  def fill(node: ml_collections.ConfigDict, values: dict[str, Any], prefix: str):
    for key, value in values.items():
      if key not in node:
        raise ConfigError(f"saved config field {prefix}{key!r} is not a field of experiment "
                          f"{exp!r}; accepted: a run made by this version of qkvjax")
      if isinstance(node[key], ml_collections.ConfigDict):
        fill(node[key], value, f"{prefix}{key}.")
      else:
        node[key] = tuple(value) if isinstance(value, list) else value
  fill(config, saved, "")
  return config
