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


def model_config(**overrides) -> ml_collections.ConfigDict:
  """The ``model`` block (``qkvjax.model``) with its defaults, then ``overrides``."""
  m = ml_collections.ConfigDict()
  m.d_model = 64
  m.n_heads = 4
  m.d_head = 16
  m.n_layers = 2
  m.mlp = True
  m.d_mlp = 128
  m.causal = True            # False: bidirectional (encoder)
  m.residual = True
  m.residual_scale = 1.0     # x + residual_scale * branch
  m.tie = "none"             # "qk": W_K = W_Q; "qkv": W_Q = W_K = W_V
  m.value_proj = True        # False: V is the layer input (needs H*D = d_model)
  m.qk_norm = False          # LayerNorm on q and k (QK-norm)
  m.qkv_init = "lecun_normal"  # one initializer for W_Q, W_K and W_V
  m.qkv_init_scale = 1.0
  m.attn_scale = "inv_sqrt_dk"  # or "none", or a number
  m.update(overrides)
  return m


def optim_config(**overrides) -> ml_collections.ConfigDict:
  """The ``optim`` block (``qkvjax.train.make_optimizer``), then ``overrides``."""
  o = ml_collections.ConfigDict()
  o.optimizer = "adamw"      # or "sgd"
  o.learning_rate = 1e-3
  o.b1 = 0.9
  o.b2 = 0.999
  o.weight_decay = 0.0
  o.momentum = 0.9           # sgd only
  o.warmup_steps = 0
  o.grad_clip = 0.0          # 0 = off
  o.update(overrides)
  return o


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


def parse_list(config, field: str, kind: type, accepted: str, ok=lambda v: True) -> list:
  """A comma-separated config field as a list of ``kind``; ConfigError if any
  item does not parse or fails ``ok``, or if the list is empty or repeats."""
  text = config[field]
  try:
    items = [kind(x.strip()) for x in str(text).split(",")]
  except ValueError:
    items = None
  if (not items or len(set(items)) != len(items) or not all(ok(v) for v in items)
      or (kind is float and not all(math.isfinite(v) for v in items))):
    raise ConfigError(f"config.{field}={text!r} is out of range; accepted: {accepted}")
  return items


def _require(ok: bool, path: str, value, accepted: str):
  if not ok:
    raise ConfigError(f"config.{path}={value!r} is out of range; accepted: {accepted}")


def _get(c, path):
  for part in path.split("."):
    c = c[part]
  return c


def require_at_least(c, paths, minimum=1) -> None:
  """Each dotted ``path`` of ``c`` must be >= ``minimum``."""
  for path in paths:
    value = _get(c, path)
    _require(value >= minimum, path, value,
             f"an integer >= {minimum}" if isinstance(value, int) else f"a number >= {minimum}")


def require_choice(c, path, choices) -> None:
  value = _get(c, path)
  _require(value in choices, path, value, ", ".join(map(str, choices)))


MAX_SEED = 2**32 - 1
MAX_SEEDS = 4096
MAX_BATCH = 65536


def validate_common(c: ml_collections.ConfigDict) -> None:
  """Fields every training experiment has."""
  require_at_least(c, ("num_seeds", "steps", "log_every", "batch_size"))
  _require(0 <= c.seed <= MAX_SEED, "seed", c.seed, f"an integer in 0..{MAX_SEED}")
  _require(c.num_seeds <= MAX_SEEDS, "num_seeds", c.num_seeds, f"1..{MAX_SEEDS}")
  _require(c.batch_size <= MAX_BATCH, "batch_size", c.batch_size, f"1..{MAX_BATCH}")


def validate_model(m: ml_collections.ConfigDict, prefix: str = "model") -> None:
  """The ``model`` block (``qkvjax.model``)."""
  from qkvjax import model as model_lib  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict({prefix: m})
  require_at_least(c, [f"{prefix}.{f}" for f in ("d_model", "n_heads", "d_head",
                                                 "n_layers", "d_mlp")])
  require_choice(c, f"{prefix}.qkv_init", tuple(model_lib.QKV_INITIALIZERS))
  _require(m.qkv_init_scale > 0, f"{prefix}.qkv_init_scale", m.qkv_init_scale,
           "a number > 0")
  scale_ok = m.attn_scale in ("inv_sqrt_dk", "none")
  if not scale_ok:
    try:
      scale_ok = 1e-6 <= float(m.attn_scale) <= 1e6
    except ValueError:
      pass
  _require(scale_ok, f"{prefix}.attn_scale", m.attn_scale,
           "'inv_sqrt_dk', 'none' or a number in [1e-6, 1e6]")
  require_choice(c, f"{prefix}.tie", model_lib.TIE_MODES)
  _require(m.value_proj or m.n_heads * m.d_head == m.d_model, f"{prefix}.value_proj",
           m.value_proj, "True, or False only when n_heads * d_head == d_model")
  _require(m.residual_scale > 0, f"{prefix}.residual_scale", m.residual_scale,
           "a number > 0")


def validate_optim(o: ml_collections.ConfigDict) -> None:
  """The ``optim`` block (``qkvjax.train.make_optimizer``)."""
  from qkvjax import train  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict({"optim": o})
  require_choice(c, "optim.optimizer", train.OPTIMIZERS)
  _require(o.learning_rate > 0, "optim.learning_rate", o.learning_rate, "a number > 0")
  require_at_least(c, [f"optim.{f}" for f in ("weight_decay", "warmup_steps",
                                              "grad_clip")], 0)
  for f in ("b1", "b2", "momentum"):
    _require(0 <= o[f] < 1, f"optim.{f}", o[f], "0 <= value < 1")


def validate_selection_task(t: ml_collections.ConfigDict) -> None:
  """The ``task`` block of the selection task (``qkvjax.tasks``)."""
  c = ml_collections.ConfigDict({"task": t})
  require_at_least(c, [f"task.{f}" for f in ("n_categories", "nouns_per_category",
                                             "verbs_per_category", "n_details", "n_slots")])
  _require(t.n_slots <= t.n_categories, "task.n_slots", t.n_slots,
           f"1..task.n_categories ({t.n_categories})")


def validate_training_config(c: ml_collections.ConfigDict) -> None:
  """A selection-task training config, as ``configs/specialization.py``."""
  validate_common(c)
  validate_model(c.model)
  validate_optim(c.optim)
  validate_selection_task(c.task)
