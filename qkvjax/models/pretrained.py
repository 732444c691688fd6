"""One NNX model for the pretrained architectures ``qkvjax.pretrained`` loads.

The BERT family (post-LayerNorm encoder, learned absolute and token-type
positions), GPT-2 (pre-LayerNorm decoder, learned positions, tied
unembedding) and Llama/Mistral (pre-RMSNorm decoder, rotary positions,
grouped-query attention, gated SiLU MLP) differ only in the fields of an
``Architecture``. Every attention block is the shared ``MultiHeadAttention``
in ``layers/<l>/attn``, so the metrics of ``qkvjax.metrics`` (site names
``L0``...), ``models.apply`` and its captured traces work unchanged; the
model sows ``token_embed`` (the word embeddings alone) like ``Transformer``.

Letters in names: B batch, T positions, M d_model, F MLP width, V vocabulary.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from qkvjax import attention
from qkvjax.models.attention_block import MultiHeadAttention
from qkvjax.models.hyper import record

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # BERT: the exact erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # GPT-2: the tanh form
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What distinguishes one pretrained architecture from another."""

  family: str                # "bert", "gpt2" or "llama"
  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  d_head: int
  d_mlp: int
  max_positions: int         # learned positions; 0 with rotary positions
  causal: bool
  post_norm: bool            # x = norm(x + sublayer(x)) (BERT) or x + sublayer(norm(x))
  rms_norm: bool             # RMSNorm (Llama) or LayerNorm
  norm_eps: float
  activation: str            # a key of ACTIVATIONS
  gated_mlp: bool            # down(act(gate(x)) * up(x)) (Llama) or out(act(in(x)))
  bias: bool                 # biases on the attention projections
  mlp_bias: bool             # biases on the MLP projections
  rotary_theta: float | None  # rotary positions with this base, or None
  max_len: int               # the longest input the forward is exact for
  type_vocab_size: int = 0   # BERT token types (0: none)
  embed_norm: bool = False   # a norm on the embeddings (BERT)
  final_norm: bool = True    # a norm before the unembedding (GPT-2, Llama)
  lm_head: bool = True       # logits out; False: the final hidden states (BertModel)
  mlm_transform: bool = False  # BERT's masked-LM head: dense, activation, LayerNorm


def _norm(arch: Architecture, rngs: nnx.Rngs) -> nnx.Module:
  if arch.rms_norm:
    return nnx.RMSNorm(arch.d_model, epsilon=arch.norm_eps, rngs=rngs)
  return nnx.LayerNorm(arch.d_model, epsilon=arch.norm_eps, use_fast_variance=False,
                       rngs=rngs)


class Mlp(nnx.Module):
  """out(act(in(x))), or down(act(gate(x)) * up(x)) when gated."""

  def __init__(self, arch: Architecture, *, rngs: nnx.Rngs):
    m, f = arch.d_model, arch.d_mlp
    self.act, self.gated = arch.activation, arch.gated_mlp
    self.linear_in = nnx.Linear(m, f, use_bias=arch.mlp_bias, rngs=rngs)
    if arch.gated_mlp:
      self.linear_gate = nnx.Linear(m, f, use_bias=arch.mlp_bias, rngs=rngs)
    self.linear_out = nnx.Linear(f, m, use_bias=arch.mlp_bias, rngs=rngs)

  def __call__(self, x_BxTxM):
    h_BxTxF = ACTIVATIONS[self.act](
        self.linear_gate(x_BxTxM) if self.gated else self.linear_in(x_BxTxM))
    if self.gated:
      h_BxTxF = h_BxTxF * self.linear_in(x_BxTxM)
    return self.linear_out(h_BxTxF)


class PretrainedBlock(nnx.Module):
  """Attention and MLP sublayers, post- or pre-norm."""

  def __init__(self, arch: Architecture, *, rngs: nnx.Rngs):
    self.post_norm = arch.post_norm
    self.ln_attn = _norm(arch, rngs)
    self.attn = MultiHeadAttention(arch.d_model, arch.n_heads, arch.d_head, rngs=rngs,
                                   n_kv_heads=arch.n_kv_heads, bias=arch.bias,
                                   rotary_theta=arch.rotary_theta)
    self.ln_mlp = _norm(arch, rngs)
    self.mlp = Mlp(arch, rngs=rngs)

  def __call__(self, x_BxTxM, mask):
    record(self, "resid_in", x_BxTxM)
    if self.post_norm:
      x_BxTxM = self.ln_attn(x_BxTxM + self.attn(x_BxTxM, mask=mask))
      return self.ln_mlp(x_BxTxM + self.mlp(x_BxTxM))
    x_BxTxM = x_BxTxM + self.attn(self.ln_attn(x_BxTxM), mask=mask)
    return x_BxTxM + self.mlp(self.ln_mlp(x_BxTxM))


class PretrainedTransformer(nnx.Module):
  """``PretrainedTransformer(arch, rngs=...)``: logits [B, T, V] (or, without
  ``lm_head``, the final hidden states [B, T, M]) of token ids [B, T]."""

  def __init__(self, arch: Architecture, *, rngs: nnx.Rngs):
    m = arch.d_model
    self.arch = arch
    self.causal = arch.causal
    self.embed = nnx.Embed(arch.vocab_size, m, rngs=rngs)
    if arch.max_positions:
      self.pos_embed = nnx.Param(jnp.zeros((arch.max_positions, m)))
    if arch.type_vocab_size:
      self.type_embed = nnx.Param(jnp.zeros((arch.type_vocab_size, m)))
    if arch.embed_norm:
      self.ln_embed = _norm(arch, rngs)
    self.layers = nnx.List([PretrainedBlock(arch, rngs=rngs) for _ in range(arch.n_layers)])
    if arch.final_norm:
      self.ln_final = _norm(arch, rngs)
    if arch.mlm_transform:
      self.mlm_dense = nnx.Linear(m, m, rngs=rngs)
      self.mlm_norm = _norm(arch, rngs)
    if arch.lm_head:
      self.unembed = nnx.Linear(m, arch.vocab_size, use_bias=arch.mlm_transform, rngs=rngs)

  @property
  def embedding_matrix(self) -> jax.Array:
    """W_E [V, M]."""
    return self.embed.embedding[...]

  @property
  def unembedding_matrix(self) -> jax.Array:
    """W_U [M, V]: the model's own, or W_E^T where it has none (BERT's masked-LM
    decoder is tied to W_E)."""
    return self.unembed.kernel[...] if self.arch.lm_head else self.embed.embedding[...].T

  def __call__(self, tokens_BxT: jax.Array, key_mask_BxT: jax.Array | None = None
               ) -> jax.Array:
    """``key_mask_BxT``: False at padding (keys never attended to)."""
    t = tokens_BxT.shape[1]
    tok_BxTxM = self.embed(tokens_BxT)
    record(self, "token_embed", tok_BxTxM)
    x_BxTxM = tok_BxTxM
    if self.arch.max_positions:
      x_BxTxM = x_BxTxM + self.pos_embed[:t]
    if self.arch.type_vocab_size:
      x_BxTxM = x_BxTxM + self.type_embed[0]  # every token is of type 0 (one segment)
    if self.arch.embed_norm:
      x_BxTxM = self.ln_embed(x_BxTxM)
    mask = attention.causal_mask(t) if self.causal else None
    if key_mask_BxT is not None:
      keys = key_mask_BxT[:, None, None, :]
      mask = keys if mask is None else mask & keys
    for block in self.layers:
      x_BxTxM = block(x_BxTxM, mask)
    record(self, "final_resid", x_BxTxM)
    if self.arch.final_norm:
      x_BxTxM = self.ln_final(x_BxTxM)
    if self.arch.mlm_transform:
      x_BxTxM = self.mlm_norm(ACTIVATIONS[self.arch.activation](self.mlm_dense(x_BxTxM)))
    return self.unembed(x_BxTxM) if self.arch.lm_head else x_BxTxM
