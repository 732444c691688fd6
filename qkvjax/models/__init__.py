"""Flax NNX models whose attention matrices are named parameters.

Every attention block is ``MultiHeadAttention`` (``attention_block.py``), which
calls the pure ``qkvjax.attention.dot_product_attention``. Its W_Q, W_K, W_V
are ``nnx.Param`` of shape ``[d_model, heads, d_head]`` and W_O is
``[heads, d_head, d_model]``; each carries ``heads_axis`` metadata, so metrics
find the head axis of any model's attention matrices from its state alone.

Models are trained functionally (``qkvjax.train``): ``nnx.split`` once, pure
functions of the state, ``nnx.merge`` inside ``jax.jit``. Attention internals
are exposed with ``Module.sow`` and read with ``capture`` (see ``capture.py``).
"""

from qkvjax.models.attention_block import AttentionTrace, MultiHeadAttention
from qkvjax.models.capture import Captured, apply, capture_names, site_name
from qkvjax.models.encoder_decoder import EncoderDecoder
from qkvjax.models.hyper import Hyper, hyper, value_of
from qkvjax.models.transformer import Block, Transformer
from qkvjax.models.validate import validate_model

__all__ = [
    "AttentionTrace", "Block", "Captured", "EncoderDecoder", "Hyper",
    "MultiHeadAttention", "Transformer", "validate_model", "apply", "capture_names", "hyper",
    "site_name", "value_of",
]
