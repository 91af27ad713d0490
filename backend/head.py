"""The root's part of the model: tokenizer-side tensors only (embedding, final norm, LM head); with modelled
compute, none (ModelledHead)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from common.cost_model import LayerShape, head_cost
from common.gemv import linear as gemv_linear
from common.latency import sleep_exactly
from common.model_info import load_config, model_family
from common.dtypes import QUANTIZED, compute_dtype_name, torch_dtype, torch_threads
from common.profiles import DeviceProfile
from common.torch_threads import use_torch_threads
from common.weight_formats import held_weight_bytes, quantize_projections
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
        head_weight = tensors[EMBED] if tied else tensors.pop(LM_HEAD)
        # int4 / int8: the head in the layers' own format, as distributed-llama's converter writes lm_head in
        # q40: in float32 it is 262 MB of the 0.87 GB a TinyLlama int4 token reads. The float copy is dropped (a tied
        # embedding keeps its own, for lookups).
        quantized = quantized_head(head_weight, dtype_name)  # int4: onnxruntime's pool of torch's threads now (THREADS)
        self.torch_threads = torch_threads(dtype_name, torch.get_num_threads())  # torch's own, around that head
        self.quantized_head = quantized[0] if quantized is not None else None
        self.lm_head_weight = None if quantized is not None else head_weight
        rms_norm = model_family(self.config).classes().rms_norm
        self.norm = rms_norm(self.config.hidden_size, eps=self.config.rms_norm_eps)
        self.norm.weight = torch.nn.Parameter(tensors[NORM], requires_grad=False)
        self.weight_bytes = sum(t.nbytes for t in tensors.values()) + (
            held_weight_bytes(quantized, dtype_name) if quantized is not None else 0 if tied else head_weight.nbytes)

    @torch.inference_mode()
    def embed(self, token_ids: list[int]) -> torch.Tensor:
        """ids (T,) -> hidden (1, T, hidden)."""
        use_torch_threads(self.torch_threads)  # a request's thread: the root's first compute of each step
        return torch.nn.functional.embedding(torch.tensor([token_ids]), self.embed_weight)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (1, T, hidden) -> float32 logits (vocab,) of the last position only."""
        return self.lm_head(self.final_norm(hidden))

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden[:, -1:, :].to(self.dtype))

    def lm_head(self, last: torch.Tensor) -> torch.Tensor:
        return self.project(last)[0, -1].float()

    def project(self, normed: torch.Tensor) -> torch.Tensor:
        """normed (1, T, hidden) -> logits (1, T, vocab) of every position, through the head as held."""
        if self.quantized_head is not None:
            return self.quantized_head(normed)
        return (gemv_linear if self.gemv else torch.nn.functional.linear)(normed, self.lm_head_weight)


def quantized_head(weight: torch.Tensor, dtype_name: str) -> torch.nn.Sequential | None:
    """The LM head quantized as the layers' projections are, for int4 (q40-style groups of 32) and int8
    (per-row int8, dynamically quantized): a Sequential of that one module (the quantizers replace a
    module's children); None for the float dtypes, which keep the plain weight."""
    if dtype_name not in QUANTIZED:
        return None
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    head = torch.nn.Sequential(linear)
    with torch.no_grad():
        quantize_projections(head, dtype_name)
    return head


class ModelledHead:
    """HeadModel's interface for modelled compute (COMPUTE=modelled): no weights are read, the embedding is
    zeros of the real shape (so the links carry real sizes), and each logits step takes the LM head's
    modelled time on the root's device, then makes `token_id` certain: never an end of sequence, so a
    reply runs to max_tokens. The text is the tokenizer's, real-looking and meaningless."""

    def __init__(self, model_dir: str | Path, dtype_name: str, profile: DeviceProfile, token_id: int):
        self.config = load_config(model_dir)
        self.dtype = torch_dtype(compute_dtype_name(dtype_name))  # q40/q80 compute in float32
        self.loaded_tensor_names: list[str] = []
        self.weight_bytes = 0
        self.device, self.token_id = profile, token_id
        shape = LayerShape.from_config(json.loads((Path(model_dir) / "config.json").read_text()))
        self.logits_ms = head_cost(profile, dtype_name, shape).total_ms
        # (vocab,) float32: every other token impossible, whatever the sampling settings
        self._logits = torch.full((self.config.vocab_size,), float("-inf"))
        self._logits[token_id] = 0.0

    def embed(self, token_ids: list[int]) -> torch.Tensor:
        """ids (T,) -> zeros (1, T, hidden)."""
        return torch.zeros(1, len(token_ids), self.config.hidden_size, dtype=self.dtype)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (1, T, hidden) -> (vocab,) float32 logits that pick token_id, after the LM head's modelled time."""
        sleep_exactly(self.logits_ms / 1e3)
        return self._logits


def filler_token(tokenizer, eos_ids: list[int], word: str = " modelled") -> int:
    """The token every modelled step yields: the first piece of `word` (the text then reads "model model
    ..."), or failing that the lowest id that is no special token; never an end of sequence."""
    banned = set(eos_ids) | set(getattr(tokenizer, "all_special_ids", []) or [])
    for token in tokenizer.encode(word, add_special_tokens=False):
        if token not in banned:
            return token
    return next(i for i in range(len(tokenizer)) if i not in banned)
