"""Checks of a ``model`` block (``qkvjax.models.Transformer``), beside the
model whose options it checks."""

from __future__ import annotations

import ml_collections

from qkvjax import attention
from qkvjax import config as config_lib
from qkvjax.models import attention_block


def validate_model(m: ml_collections.ConfigDict, prefix: str = "model") -> None:
  """A ``model`` block (``qkvjax.models.Transformer``)."""
  c = ml_collections.ConfigDict({prefix: m})
  config_lib.require_at_least(c, [f"{prefix}.{f}" for f in ("d_model", "n_heads", "d_head",
                                                 "n_layers", "d_mlp") if f in m])
  config_lib.require_choice(c, f"{prefix}.qkv_init", tuple(attention_block.QKV_INITIALIZERS))
  config_lib.require(m.qkv_init_scale > 0, f"{prefix}.qkv_init_scale", m.qkv_init_scale,
          "a number > 0")
  if "attn_scale" in m:
    try:
      scale_ok = 1e-6 <= attention.resolve_scale(m.attn_scale, m.d_head) <= 1e6
    except ValueError:
      scale_ok = False
    config_lib.require(scale_ok, f"{prefix}.attn_scale", m.attn_scale,
            "'inv_sqrt_dk', 'none' or a number in [1e-6, 1e6]")
  if "tie" in m:
    config_lib.require_choice(c, f"{prefix}.tie", attention_block.TIE_MODES)
    config_lib.require(m.value_proj or m.n_heads * m.d_head == m.d_model, f"{prefix}.value_proj",
            m.value_proj, "True, or False only when n_heads * d_head == d_model")
    config_lib.require(m.value_proj or m.tie == "none", f"{prefix}.value_proj", m.value_proj,
            "True, or False only with tie='none'")
  if "residual_scale" in m:
    config_lib.require(m.residual_scale > 0, f"{prefix}.residual_scale", m.residual_scale,
            "a number > 0")
