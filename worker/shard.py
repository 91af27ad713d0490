"""A worker's slice of a Llama model: decoder layers [start, end), loaded tensor by tensor."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers.cache_utils import DynamicCache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from common.model_info import load_config
from common.split import Shard
from common.weights import WeightIndex, layer_prefix, layer_tensor_names, torch_dtype


class DecoderSlice:
    """Stock transformers decoder layers for one shard; nothing of the rest of the model is held."""

    def __init__(self, model_dir: str | Path, shard: Shard, dtype_name: str):
        self.model_dir, self.shard, self.dtype_name = str(model_dir), shard, dtype_name
        self.config = load_config(model_dir)
        n_layers = self.config.num_hidden_layers
        if not 0 <= shard.start < shard.end <= n_layers:
            raise ValueError(f"layers [{shard.start}, {shard.end}) are outside the model's 0..{n_layers}")
        dtype = torch_dtype(dtype_name)
        index = WeightIndex(model_dir)
        names = layer_tensor_names(index.names(), shard.start, shard.end)
        tensors = index.load(names, dtype)
        self.loaded_tensor_names = sorted(tensors)
        self.layers = torch.nn.ModuleList()
        for local_idx, global_idx in enumerate(range(shard.start, shard.end)):
            # The local index is the KV cache's layer slot; the cache holds only this slice's layers.
            with torch.device("meta"):
                layer = LlamaDecoderLayer(self.config, layer_idx=local_idx)
            prefix = layer_prefix(global_idx)
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            layer.load_state_dict(state, strict=True, assign=True)
            self.layers.append(layer.eval())
        self.rotary = LlamaRotaryEmbedding(self.config)
        self.hidden_size = self.config.hidden_size
        self.dtype = dtype
        self.weight_bytes = sum(t.numel() * t.element_size() for t in tensors.values())

    @torch.inference_mode()
    def forward(self, hidden: torch.Tensor, cache: DynamicCache, start_pos: int) -> torch.Tensor:
        """hidden: (1, T, hidden) for positions [start_pos, start_pos + T) -> same shape."""
        seq_len = hidden.shape[1]
        if cache.get_seq_length() != start_pos:
            raise ValueError(f"position {start_pos} does not follow the {cache.get_seq_length()} cached ones")
        hidden = hidden.to(self.dtype)
        position_ids = torch.arange(start_pos, start_pos + seq_len).unsqueeze(0)
        position_embeddings = self.rotary(hidden, position_ids)
        for layer in self.layers:
            # attention_mask None: SDPA applies the causal mask itself for T > 1 (as HF generate does).
            hidden = layer(hidden, attention_mask=None, position_ids=position_ids, past_key_values=cache,
                           use_cache=True, position_embeddings=position_embeddings)
        return hidden
