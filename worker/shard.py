"""A worker's slice of a model (a family of common/model_family.py): decoder layers [start, end), loaded
layer by layer.

dtype float32 | bfloat16 | float16: weights and compute in that dtype.
dtype int8 | int4: each layer is read in float32 and its projections quantized (int8 by common/quantize.py,
the layer at once; int4, q40-style groups of 32 by common/int4.py, a matrix at once: common/weight_formats.py
fill_layer); compute, activations and KV cache stay float32.
gemv (DECODE_GEMV): float32 one-row products through gemv (common/gemv.py) and one-token attention on
the key/value heads (common/decode_attention.py); False keeps every stock kernel, bit for bit HF's.
"""
from __future__ import annotations

import ctypes
import gc
from pathlib import Path

import torch
from transformers.cache_utils import DynamicCache

from common import decode_attention
from common.decode_layer import FastDecode, rows_together
from common.gemv import use_gemv
from common.model_info import load_config, model_family
from common.model_family import import_all
from common.placement import Shard
from common.dtypes import torch_dtype
from common.weight_formats import fill_layer, held_weight_bytes
from common.weights import WeightIndex, layer_prefix, layer_tensor_names


import_all()  # at start, not at the first load (common/model_family.import_all says why)


def release_freed_memory() -> None:
    """Hands the loader's freed copies (dtype casts, float32 layers before int8) back to the system:
    glibc keeps freed heap memory otherwise, and a small device would count it as used."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        pass


class DecoderSlice:
    """Stock transformers decoder layers for one shard; nothing of the rest of the model is held."""

    def __init__(self, model_dir: str | Path, shard: Shard, dtype_name: str, gemv: bool = True):
        self.model_dir, self.shard, self.dtype_name = str(model_dir), shard, dtype_name
        self.config = load_config(model_dir)
        self.config._attn_implementation = decode_attention.implementation(gemv)  # one-token GQA on the kv heads
        decoder_layer, rotary_embedding, _ = model_family(self.config).classes()
        n_layers = self.config.num_hidden_layers
        if not 0 <= shard.start < shard.end <= n_layers:
            raise ValueError(f"layers [{shard.start}, {shard.end}) are outside the model's 0..{n_layers}")
        dtype = torch_dtype(dtype_name)
        index = WeightIndex(model_dir)
        all_names = index.names()
        self.loaded_tensor_names: list[str] = []
        self.layers = torch.nn.ModuleList()
        for local_idx, global_idx in enumerate(range(shard.start, shard.end)):
            names = layer_tensor_names(all_names, global_idx, global_idx + 1)
            prefix = layer_prefix(global_idx)
            together = rows_together(prefix, dtype_name, gemv)  # q/k/v, gate/up: one matrix each
            self.loaded_tensor_names += names
            # The local index is the KV cache's layer slot; the cache holds only this slice's layers.
            with torch.device("meta"):
                layer = decoder_layer(self.config, layer_idx=local_idx)
            # int8 / int4: the float32 matrices are quantized and freed in there
            fill_layer(layer, prefix, names, lambda group: index.load(group, dtype, together), dtype_name, together)
            self.layers.append(layer.eval())
        self.loaded_tensor_names.sort()
        self.gemv_linears = use_gemv(self.layers) if gemv else 0  # float32 only; a no-op otherwise
        self.fast = FastDecode.of(self.layers) if gemv else None  # one token without the modules' glue
        self.rotary = rotary_embedding(self.config)
        self.hidden_size = self.config.hidden_size
        self.dtype = dtype
        self.weight_bytes = held_weight_bytes(self.layers, dtype_name)
        release_freed_memory()

    @torch.inference_mode()
    def forward(self, hidden: torch.Tensor, cache: DynamicCache, start_pos: int) -> torch.Tensor:
        """hidden: (1, T, hidden) for positions [start_pos, start_pos + T) -> same shape."""
        seq_len = hidden.shape[1]
        if cache.get_seq_length() != start_pos:
            raise ValueError(f"position {start_pos} does not follow the {cache.get_seq_length()} cached ones")
        hidden = hidden.to(self.dtype)
        position_ids = torch.arange(start_pos, start_pos + seq_len).unsqueeze(0)
        position_embeddings = self.rotary(hidden, position_ids)
        if seq_len == 1 and self.fast is not None:
            for i in range(len(self.layers)):
                hidden = self.fast.layer(i, hidden, position_embeddings, cache)
            return hidden
        for layer in self.layers:
            # attention_mask None: SDPA applies the causal mask itself for T > 1 (as HF generate does).
            hidden = layer(hidden, attention_mask=None, position_ids=position_ids, past_key_values=cache,
                           use_cache=True, position_embeddings=position_embeddings)
        return hidden
