"""The root's part of the model: tokenizer-side tensors only (embedding, final norm, LM head)."""
from __future__ import annotations

from pathlib import Path

import torch

from common.gemv import linear as gemv_linear
from common.model_info import load_config, model_family
from common.dtypes import torch_dtype
from common.weights import WeightIndex

EMBED, NORM, LM_HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


class HeadModel:
    def __init__(self, model_dir: str | Path, dtype_name: str, gemv: bool = True):
        self.gemv = gemv
        self.config = load_config(model_dir)
        self.dtype = torch_dtype(dtype_name)
        index = WeightIndex(model_dir)
        # Tied embeddings (Llama 3.2, Qwen3 up to 4B): one tensor serves both, as HF ties them, even when a
        # checkpoint also stores an lm_head.weight copy; a folder without an lm_head.weight is read as tied.
        tied = self.config.tie_word_embeddings or LM_HEAD not in index.names()
        tensors = index.load([EMBED, NORM] + ([] if tied else [LM_HEAD]), self.dtype)
        self.loaded_tensor_names = sorted(tensors)
        self.embed_weight = tensors[EMBED]
        self.lm_head_weight = tensors[EMBED] if tied else tensors[LM_HEAD]
        rms_norm = model_family(self.config).classes().rms_norm
        self.norm = rms_norm(self.config.hidden_size, eps=self.config.rms_norm_eps)
        self.norm.weight = torch.nn.Parameter(tensors[NORM], requires_grad=False)
        self.weight_bytes = sum(t.numel() * t.element_size() for t in tensors.values())

    @torch.inference_mode()
    def embed(self, token_ids: list[int]) -> torch.Tensor:
        """ids (T,) -> hidden (1, T, hidden)."""
        return torch.nn.functional.embedding(torch.tensor([token_ids]), self.embed_weight)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (1, T, hidden) -> float32 logits (vocab,) of the last position only."""
        return self.lm_head(self.final_norm(hidden))

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden[:, -1:, :].to(self.dtype))

    def lm_head(self, last: torch.Tensor) -> torch.Tensor:
        project = gemv_linear if self.gemv else torch.nn.functional.linear
        return project(last, self.lm_head_weight)[0, -1].float()
