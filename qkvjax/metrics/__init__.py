"""Metrics: pure functions returning flat ``dict[str, scalar]`` with slash keys.

Keys are ``<metric>/<site>[/H<head>][/<matrix>]`` where a site is a short
state path (``L0``, ``decoder/L1/cross_attn``; ``qkvjax.models.site_name``).
Metric *groups* take a ``qkvjax.train.Measurement`` and run inside the jitted,
run-vmapped measurement; a study lists the groups it logs.

- ``weights``: per-matrix norms, gradients (per head, or per matrix only:
  ``matrix_grad_norms``), updates, distance from init, spectra and effective
  rank, found from parameter paths and ``heads_axis`` metadata, so any NNX
  model gets them.
- ``similarity``: CKA and RSA of the Q, K, V vectors with the token embedding.
- ``attention``: attention on a task's ground-truth key, logit statistics,
  entropy, the Q.K ablation, the prediction position's attention on
  itself vs the target, and an encoder-decoder's cross-attention alignment.
- ``context``: how an ambiguous word's q, k, v change with its context (the
  context task's probe set).
- ``heads``: per head, attention share and ablation damage of each relation
  of the two-relation task, and how the relations' profiles over heads overlap.
- ``representations``: the residual stream's continuity with the embedding
  and rank collapse, by depth.
- ``circuits``: the OV copying score; the symmetry and directionality of
  W_Q W_K^T per head and per layer (``qk_structure``, logged by every study).
"""

from qkvjax.metrics.attention import (ablate_head, ablate_qk, attention_signal,
                                      heldout_alignment, logit_std, max_logit,
                                      normalized_entropy, prediction_attention,
                                      target_attention, visible_mask)
from qkvjax.metrics.circuits import (attention_modules, copying_from_matrices,
                                     directionality_score, ov_copying, ov_copying_score,
                                     ov_matrices, qk_matrices, qk_structure,
                                     qk_structure_scores, qk_update_structure,
                                     symmetry_score)
from qkvjax.metrics.context import context_probe
from qkvjax.metrics.heads import relation_heads
from qkvjax.metrics.representations import (rank_collapse, representation_metrics,
                                            token_cosine)
from qkvjax.metrics.similarity import (embedding_similarity, linear_cka,
                                       linear_probe_accuracy, rsa)
from qkvjax.metrics.weights import (attention_matrices, cosine, effective_rank,
                                    frobenius, grad_norms, matrices, matrix_grad_norms,
                                    spectra, weight_norms)

__all__ = [
    "ablate_head", "ablate_qk", "attention_matrices", "attention_modules",
    "attention_signal", "context_probe", "copying_from_matrices", "cosine",
    "directionality_score",
    "effective_rank",
    "embedding_similarity", "frobenius", "grad_norms", "heldout_alignment", "linear_cka",
    "linear_probe_accuracy", "logit_std", "matrices", "matrix_grad_norms", "max_logit",
    "normalized_entropy", "ov_copying",
    "ov_copying_score", "ov_matrices", "prediction_attention", "qk_matrices", "qk_structure",
    "qk_structure_scores",
    "qk_update_structure", "rank_collapse", "relation_heads",
    "representation_metrics", "rsa", "spectra", "symmetry_score", "target_attention",
    "token_cosine", "visible_mask", "weight_norms",
]
