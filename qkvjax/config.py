"""Loading experiment configs and applying typed command-line overrides.

An experiment ``NAME`` is the file ``configs/NAME.py`` whose ``get_config()``
returns an ``ml_collections.ConfigDict``. Overrides are ``FIELD=VALUE`` with
dotted paths for nested fields; the value is parsed as the field's type.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import ml_collections

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
  """Bad user input: the message is one line naming the value and what is accepted."""


def available_experiments(config_dir: pathlib.Path = CONFIG_DIR) -> list[str]:
  return sorted(p.stem for p in config_dir.glob("*.py") if not p.stem.startswith("_"))


def load_config(exp: str, config_dir: pathlib.Path = CONFIG_DIR) -> ml_collections.ConfigDict:
  names = available_experiments(config_dir)
  if exp not in names:
    raise ConfigError(f"unknown experiment {exp!r}; accepted: {', '.join(names)}")
  spec = importlib.util.spec_from_file_location(f"configs.{exp}", config_dir / f"{exp}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _parse(path: str, text: str, current):
  kind = type(current)
  try:
    if kind is bool:
      low = text.strip().lower()
      if low in ("true", "1", "yes"):
        return True
      if low in ("false", "0", "no"):
        return False
      raise ValueError
    if kind is int:
      return int(text)
    if kind is float:
      value = float(text)
      if not math.isfinite(value):
        raise ValueError
      return value
    if kind is str:
      return text
  except ValueError:
    pass
  names = {bool: "a bool (true/false)", int: "an integer", float: "a finite number",
           str: "a string"}
  raise ConfigError(f"--config.{path}={text!r} is not {names.get(kind, kind.__name__)}")


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str],
                    exp: str = "") -> ml_collections.ConfigDict:
  """Returns a copy of ``config`` with ``{"a.b": "value"}`` overrides applied."""
  config = ml_collections.ConfigDict(config.to_dict())
  for path, text in overrides.items():
    node = config
    parts = path.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = ".".join(parts[:i]) or "the top level"
        fields = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(
            f"unknown config field {path!r}" + (f" for experiment {exp!r}" if exp else "")
            + f"; accepted at {where}: {', '.join(fields)}")
      if i < len(parts) - 1:
        node = node[part]
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(f"--config.{path} is a group; set one of its fields: "
                        f"{', '.join(sorted(current.keys()))}")
    node[parts[-1]] = _parse(path, text, current)
  return config


def split_override_args(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """Separates ``--config.FIELD=VALUE`` arguments from the rest of argv."""
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith("--config."):
      body = arg[len("--config."):]
      if "=" not in body:
        raise ConfigError(f"{arg!r} has no value; write --config.FIELD=VALUE")
      path, value = body.split("=", 1)
      overrides[path] = value
    else:
      rest.append(arg)
  return rest, overrides


def _require(ok: bool, path: str, value, accepted: str):
  if not ok:
    raise ConfigError(f"config.{path}={value!r} is out of range; accepted: {accepted}")


def validate_training_config(c: ml_collections.ConfigDict) -> None:
  """Range checks shared by every training experiment."""
  from qkvjax import model as model_lib  # pylint: disable=g-import-not-at-top
  from qkvjax import train  # pylint: disable=g-import-not-at-top

  for path in ("num_seeds", "steps", "log_every", "batch_size", "model.d_model",
               "model.n_heads", "model.d_head", "model.n_layers", "model.d_mlp",
               "task.n_categories", "task.nouns_per_category",
               "task.verbs_per_category", "task.n_details", "task.n_slots"):
    value = c
    for part in path.split("."):
      value = value[part]
    _require(value >= 1, path, value, "an integer >= 1")
  _require(c.seed >= 0, "seed", c.seed, "an integer >= 0")
  _require(c.task.n_slots <= c.task.n_categories, "task.n_slots", c.task.n_slots,
           f"1..task.n_categories ({c.task.n_categories})")
  _require(c.model.qkv_init in model_lib.QKV_INITIALIZERS, "model.qkv_init",
           c.model.qkv_init, ", ".join(model_lib.QKV_INITIALIZERS))
  _require(c.model.qkv_init_scale > 0, "model.qkv_init_scale",
           c.model.qkv_init_scale, "a number > 0")
  scale_ok = c.model.attn_scale in ("inv_sqrt_dk", "none")
  if not scale_ok:
    try:
      scale_ok = float(c.model.attn_scale) > 0
    except ValueError:
      pass
  _require(scale_ok, "model.attn_scale", c.model.attn_scale,
           "'inv_sqrt_dk', 'none' or a number > 0")
  _require(c.model.tie in model_lib.TIE_MODES, "model.tie", c.model.tie,
           ", ".join(model_lib.TIE_MODES))
  _require(c.model.value_proj or c.model.n_heads * c.model.d_head == c.model.d_model,
           "model.value_proj", c.model.value_proj,
           "True, or False only when n_heads * d_head == d_model")
  _require(c.model.residual_scale > 0, "model.residual_scale", c.model.residual_scale,
           "a number > 0")
  _require(c.optim.optimizer in train.OPTIMIZERS, "optim.optimizer",
           c.optim.optimizer, ", ".join(train.OPTIMIZERS))
  _require(c.optim.learning_rate > 0, "optim.learning_rate",
           c.optim.learning_rate, "a number > 0")
  for path in ("weight_decay", "warmup_steps", "grad_clip", "momentum"):
    _require(c.optim[path] >= 0, f"optim.{path}", c.optim[path], "a number >= 0")
  for path in ("b1", "b2"):
    _require(0 <= c.optim[path] < 1, f"optim.{path}", c.optim[path], "0 <= value < 1")
