"""The model families this project can slice: the one table from config.json's `model_type` to the stock
transformers classes the root and the workers build, and the refusal of every other model.

A family is sliceable when its decoder layers are Llama's layout (q/k/v/o projections without bias,
SwiGLU gate/up/down, an RMSNorm before attention and one before the MLP) plus, at most, small per-layer
norms that every tensor-parallel rank can hold whole. Qwen3 adds exactly that: `self_attn.q_norm` and
`self_attn.k_norm`, RMSNorms over head_dim applied to each head on its own, so a rank's run of heads
needs the whole (head_dim,) weight and nothing of the other ranks' heads.

Pure: no torch or transformers import until `classes()` is called, so model_downloader's checks and
the root's config reading can use the table cheaply.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import NamedTuple


class UnsupportedModel(ValueError):
    """A model this project cannot slice; the message names its model_type and what is supported."""


class FamilyClasses(NamedTuple):
    decoder_layer: type     # built per layer on the meta device (worker/shard.py, worker/tensor_slice.py)
    rotary_embedding: type  # the (cos, sin) of every position, shared by a worker's layers
    rms_norm: type          # the root's final norm (backend/head.py)


@dataclass(frozen=True)
class ModelFamily:
    model_type: str                # config.json's model_type
    causal_lm: str                 # the model class config.json's `architectures` names
    module: str                    # the transformers module that holds the classes below
    decoder_layer: str
    rotary_embedding: str
    rms_norm: str
    head_norms: tuple[str, ...]    # per-layer (head_dim,) norm weights beyond Llama's: whole on every rank

    def classes(self) -> FamilyClasses:
        """The stock classes, imported on first use (transformers takes seconds to import)."""
        module = importlib.import_module(self.module)
        return FamilyClasses(getattr(module, self.decoder_layer), getattr(module, self.rotary_embedding),
                             getattr(module, self.rms_norm))


FAMILIES: dict[str, ModelFamily] = {
    "llama": ModelFamily(model_type="llama", causal_lm="LlamaForCausalLM",
                         module="transformers.models.llama.modeling_llama", decoder_layer="LlamaDecoderLayer",
                         rotary_embedding="LlamaRotaryEmbedding", rms_norm="LlamaRMSNorm", head_norms=()),
    "qwen3": ModelFamily(model_type="qwen3", causal_lm="Qwen3ForCausalLM",
                         module="transformers.models.qwen3.modeling_qwen3", decoder_layer="Qwen3DecoderLayer",
                         rotary_embedding="Qwen3RotaryEmbedding", rms_norm="Qwen3RMSNorm",
                         head_norms=("self_attn.q_norm.weight", "self_attn.k_norm.weight")),
}

# Near misses, and what this project lacks to slice them: said in the refusal so the user knows why.
MISSING: dict[str, str] = {
    "mistral": "sliding-window attention (the workers run bare decoder layers without a mask, "
               "so a window would be ignored)",
    "qwen2": "q/k/v projection biases",
    "qwen3_moe": "mixture-of-experts MLPs",
    "gemma": "scaled embeddings, (1 + weight) norms and a GELU MLP",
    "gemma2": "scaled embeddings, (1 + weight) norms, a GELU MLP and sliding-window attention",
    "phi3": "fused qkv and gate/up projections",
    "gpt2": "a Llama-style layout (GPT-2 has fused Conv1D attention, LayerNorm with biases, learned positions)",
}


def import_all() -> None:
    """Import every family's stock classes now. A worker does it at start, not at its first load: what
    a load adds to its memory is then the weights alone, which placement estimates (transformers'
    modeling code is ~100 MB of RSS; tests/test_placement.py measures the difference)."""
    for family in FAMILIES.values():
        family.classes()


def supported_types() -> str:
    return ", ".join(FAMILIES)


def family_problems(config: dict) -> list[str]:
    """Why this config.json cannot be sliced by family and attention pattern; [] when it can."""
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        missing = f"; this project lacks {MISSING[model_type]}" if model_type in MISSING else ""
        return [f"model_type {model_type!r} is not supported (supported: {supported_types()}){missing}"]
    layer_types = config.get("layer_types") or []
    windowed = config.get("use_sliding_window") or any(kind != "full_attention" for kind in layer_types)
    if windowed:
        return [f"model_type {model_type!r} with sliding-window layers is not supported: the workers run every "
                "layer with full causal attention (use_sliding_window must be false)"]
    return []


def family_of(config: dict) -> ModelFamily:
    """The family of a config.json (as a dict), or UnsupportedModel saying why not."""
    problems = family_problems(config)
    if problems:
        raise UnsupportedModel("; ".join(problems))
    return FAMILIES[config["model_type"]]
