"""Config overrides: typed values, one rule for every list, a view with traced fields."""

import pytest

from qkvjax import config as config_lib
from qkvjax import registry
from qkvjax.config import ConfigError


def _cfg():
  c = registry.load_config("specialization")
  c.d_heads = (8, 32)
  c.names = ("a", "b")
  c.rates = (1e-3, 1e-2)
  return c


def test_scalar_fields_parse_as_their_type():
  c = config_lib.apply_overrides(_cfg(), {"num_seeds": "3", "model.causal": "false",
                                          "optim.learning_rate": "3e-4"})
  assert (c.num_seeds, c.model.causal, c.optim.learning_rate) == (3, False, 3e-4)


def test_tuple_fields_parse_as_tuples_of_their_item_type():
  c = config_lib.apply_overrides(_cfg(), {"d_heads": "4,16,64", "names": "x",
                                          "rates": "0.1,1"})
  assert c.d_heads == (4, 16, 64) and c.names == ("x",) and c.rates == (0.1, 1.0)


@pytest.mark.parametrize("path,text,fragment", [
    ("d_heads", "8,,32", "empty item"),
    ("d_heads", "", "empty item"),
    ("names", "x, ,y", "empty item"),
    ("d_heads", "8,8", "repeats"),
    ("d_heads", "8,x", "is not an integer"),
    ("rates", "1e-3,inf", "is not a finite number"),
    ("num_seeds", "2.5", "is not an integer"),
    ("model.n_headz", "2", "unknown config field"),
    ("model", "2", "is a group"),
])
def test_bad_values_raise_one_line_errors(path, text, fragment):
  with pytest.raises(ConfigError, match=fragment) as e:
    config_lib.apply_overrides(_cfg(), {path: text})
  assert "\n" not in str(e.value)


def test_view_replaces_fields_without_touching_the_config():
  c = _cfg()
  v = config_lib.view(c, {"model.qkv_init_scale": 0.3})
  assert v.model.qkv_init_scale == 0.3 and c.model.qkv_init_scale == 1.0
  assert v.model.d_model == c.model.d_model and v["seed"] == c.seed
  assert "model" in v and "nope" not in v


def test_every_experiment_config_loads():
  for name in registry.available_experiments():
    assert registry.load_config(name) is not None
