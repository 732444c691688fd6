"""Experiment configs: loading, typed command-line overrides, checks.

An experiment ``NAME`` is the module ``configs/NAME.py`` (installed with the
package) whose ``get_config()`` returns an ``ml_collections.ConfigDict``;
``qkvjax.registry`` loads it by name.
Overrides are ``FIELD=VALUE`` with dotted paths for nested fields; the value
is parsed as the field's type, and a tuple field takes comma-separated items
of its items' type (``--config.d_heads=8,32``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import ml_collections


from qkvjax.errors import ConfigError  # pylint: disable=g-bad-import-order

# Configs by experiment name (configs/NAME.py) are the framework's:
# qkvjax.registry.


def model_config(**overrides) -> ml_collections.ConfigDict:
  """The ``model`` block (``qkvjax.models.Transformer``) with its defaults, then ``overrides``."""
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
  m.qkv_init_scale = 1.0     # variance scale of that initializer
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


# ---- parsing -----------------------------------------------------------------------
_KIND_TEXT = {bool: "a bool (true/false)", int: "an integer", float: "a finite number",
              str: "a string"}


def parse_value(flag: str, text: str, kind: type):
  """``text`` as ``kind`` (bool, int, float or str); ConfigError naming ``flag``."""
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
      if not text.strip():
        raise ValueError
      return text.strip()
  except ValueError:
    pass
  raise ConfigError(f"{flag}={text!r} is not {_KIND_TEXT.get(kind, kind.__name__)}")


def parse_list(flag: str, text: str, kind: type) -> tuple:
  """Comma-separated ``kind`` items: one rule for every list on the command
  line. No empty list, no empty item, no repeated item."""
  items = [t.strip() for t in text.split(",")]
  if not text.strip() or any(not t for t in items):
    raise ConfigError(f"{flag}={text!r} has an empty item; accepted: comma-separated "
                      f"{_KIND_TEXT.get(kind, kind.__name__)} values, none empty")
  values = tuple(parse_value(flag, t, kind) for t in items)
  if len(set(values)) != len(values):
    raise ConfigError(f"{flag}={text!r} repeats a value; accepted: distinct values")
  return values


def item_kind(current: tuple) -> type:
  """The type of a tuple field's items (str for an empty tuple)."""
  kinds = {type(v) for v in current}
  if kinds == {int, float}:
    return float
  return kinds.pop() if len(kinds) == 1 else str


def field(config: ml_collections.ConfigDict, path: str):
  """The value at a dotted ``path``; ConfigError naming the accepted fields."""
  node = config
  parts = path.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(parts[:i]) or "the top level"
      fields = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise ConfigError(f"unknown config field {path!r}; accepted at {where}: "
                        f"{', '.join(fields)}")
    node = node[part]
  return node


def parse_field(config: ml_collections.ConfigDict, path: str, text: str,
                flag: str | None = None):
  """``text`` parsed as the type of the field at ``path`` of ``config``."""
  flag = flag or f"--config.{path}"
  current = field(config, path)
  if isinstance(current, ml_collections.ConfigDict):
    raise ConfigError(f"{flag} is a group; set one of its fields: "
                      f"{', '.join(sorted(current.keys()))}")
  if isinstance(current, tuple):
    return parse_list(flag, text, item_kind(current))
  return parse_value(flag, text, type(current))


def set_field(config: ml_collections.ConfigDict, path: str, value) -> None:
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any],
                    exp: str = "") -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``{"a.b": "text" or value}`` applied; text is
  parsed as the field's type."""
  config = copy(config)
  for path, value in overrides.items():
    try:
      if isinstance(value, str):
        value = parse_field(config, path, value)
      else:
        field(config, path)
    except ConfigError as e:
      if exp and str(e).startswith("unknown config field"):
        raise ConfigError(str(e).replace(f"field {path!r}",
                                         f"field {path!r} for experiment {exp!r}")) from None
      raise
    set_field(config, path, value)
  return config


def copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(config.to_dict())


def split_override_args(argv: list[str], prefix: str = "--config."
                        ) -> tuple[list[str], dict[str, str]]:
  """Separates ``--config.FIELD=VALUE`` arguments from the rest of argv."""
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith(prefix):
      body = arg[len(prefix):]
      if "=" not in body:
        raise ConfigError(f"{arg!r} has no value; write {prefix}FIELD=VALUE")
      path, value = body.split("=", 1)
      if path in overrides:
        raise ConfigError(f"{prefix}{path} is given twice ({overrides[path]!r} and "
                          f"{value!r}); accepted: each field once"
                          + (", its values comma-separated" if prefix == "--sweep." else ""))
      overrides[path] = value
    else:
      rest.append(arg)
  return rest, overrides


# ---- a read-only view whose fields may be traced per-run values ---------------------
class View:
  """Attribute access over a config's values with some fields replaced (e.g.
  by traced per-run arrays inside ``vmap``); model constructors read it like
  a ConfigDict."""

  def __init__(self, values: dict[str, Any]):
    self._values = values

  def __getattr__(self, name: str):
    try:
      value = self._values[name]
    except KeyError:
      raise AttributeError(name) from None
    return View(value) if isinstance(value, dict) else value

  __getitem__ = __getattr__

  def __contains__(self, name: str) -> bool:
    return name in self._values


def view(config: ml_collections.ConfigDict, replace: dict[str, Any] | None = None) -> View:
  """A ``View`` of ``config`` with the dotted fields of ``replace`` swapped in."""
  values = config.to_dict()
  for path, value in (replace or {}).items():
    *parents, leaf = path.split(".")
    node = values
    for p in parents:
      node = node[p]
    node[leaf] = value
  return View(values)


# ---- checks --------------------------------------------------------------------------
def require(ok: bool, path: str, value, accepted: str) -> None:
  """ConfigError ``config.PATH=VALUE is out of range; accepted: ...`` unless ``ok``."""
  if not ok:
    raise ConfigError(f"config.{path}={value!r} is out of range; accepted: {accepted}")


def require_at_least(c, paths: Iterable[str], minimum=1) -> None:
  """Each dotted ``path`` of ``c`` must be >= ``minimum``."""
  for path in paths:
    value = field(c, path)
    require(value >= minimum, path, value,
            f"an integer >= {minimum}" if isinstance(value, int) else f"a number >= {minimum}")


def require_choice(c, path: str, choices) -> None:
  value = field(c, path)
  require(value in choices, path, value, ", ".join(map(str, choices)))


def require_values(c, path: str, ok, accepted: str) -> tuple:
  """A tuple field whose every item passes ``ok``."""
  values = field(c, path)
  require(isinstance(values, tuple) and len(values) > 0 and all(ok(v) for v in values)
          and len(set(values)) == len(values), path, values, accepted)
  return values


def require_names(c, path: str, names) -> tuple:
  """A tuple field of distinct names, each one of ``names``."""
  return require_values(c, path, lambda v: v in names, "distinct names from " + ", ".join(names))


def require_per_condition(c, defaults: dict[str, Any], choose: str) -> None:
  """Fields a study sets per condition keep their ``defaults`` in the config;
  ``choose`` says which config field picks the conditions instead."""
  for path, default in defaults.items():
    require(field(c, path) == default, path, field(c, path),
            f"{default!r}, set per condition by this study (choose {choose})")


MAX_SEED = 2**32 - 1
MAX_SEEDS = 4096
MAX_BATCH = 65536


def validate_common(c: ml_collections.ConfigDict, min_steps: int = 1) -> None:
  """Fields every training experiment has."""
  require_at_least(c, ("num_seeds", "log_every", "batch_size"))
  require_at_least(c, ("steps",), min_steps)
  require(0 <= c.seed <= MAX_SEED, "seed", c.seed, f"an integer in 0..{MAX_SEED}")
  require(c.num_seeds <= MAX_SEEDS, "num_seeds", c.num_seeds, f"1..{MAX_SEEDS}")
  require(c.batch_size <= MAX_BATCH, "batch_size", c.batch_size, f"1..{MAX_BATCH}")
  require(c.steps == 0 or c.log_every <= c.steps, "log_every", c.log_every,
          f"an integer in 1..{c.steps} (config.steps)")
  if "checkpoint_every" in c:
    require_at_least(c, ("checkpoint_every",))
