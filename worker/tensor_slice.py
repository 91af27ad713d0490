"""A worker's tensor-parallel share of a model (Llama or Qwen3): part of EVERY decoder layer, no networking.

Built the way gpt-fast's tp.py shards a stock model from outside (`_apply_tp_linear(linear,
"colwise"|"rowwise")`, `apply_tp`): each layer is the family's stock decoder layer made from a copy of
the model config whose head counts and MLP width are this rank's, so its `q_proj`/`k_proj`/`v_proj`/
`gate_proj`/`up_proj` are column-parallel (rows of the full matrix) and its `o_proj`/`down_proj`
row-parallel (columns), as vLLM's QKVParallelLinear / MergedColumnParallelLinear / RowParallelLinear
load them (vllm/model_executor/layers/linear.py: `loaded_weight.narrow(output_dim | input_dim, ...)`,
KV rows of head `tp_rank // num_kv_head_replicas`). Only the slices are read from the safetensors
files (`safe_open(...).get_slice(name)[rows]` / `[:, cols]`) and copied out of the mmap, so no process
holds a matrix it does not need. The layer's own forward is not used: it would add the residual to a
partial sum. Instead `attention_partial` / `mlp_partial` return the partial outputs, which summed over
the ranks (`reduce_partials`) equal the stock layer's attention / MLP output (tested).

Per layer (two synchronisations, as distributed-llama and Megatron do):
    h   = x + allreduce(attention_partial(x))   # each rank: input_layernorm(x) -> its heads -> o_proj cols
    out = h + allreduce(mlp_partial(h))         # each rank: post_attention_layernorm(h) -> its ffn range
The norms are small and computed in full on every rank, so x and h are identical everywhere; Qwen3's
q_norm / k_norm normalise each head over head_dim on its own, so every rank holds them whole too.

dtype int4: each slice is read in float32 and quantized as soon as it is in (common/int4.py, groups of 32
along the slice's own inputs; common/weight_formats.py fill_layer), so the float32 copy of only one matrix
exists at a time.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Generator
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.cache_utils import DynamicCache

from common import decode_attention
from common.decode_layer import FastDecode, rows_together
from common.dtypes import torch_dtype
from common.gemv import use_gemv
from common.model_info import load_config, model_family
from common.reduction import reduce_partials
from common.tensor_split import TensorShare, tensor_shares
from common.weight_formats import fill_layer, held_weight_bytes
from common.weights import WeightIndex, layer_prefix, stacked_rows

from .shard import release_freed_memory

SUPPORTED_DTYPES = ("float32", "bfloat16", "int4")  # int8 is pipeline-only for now

Allreduce = Callable[[torch.Tensor], torch.Tensor]  # this rank's partial (1, T, hidden) -> the sum over ranks
Part = tuple[int, int, int] | None  # the part of a tensor a rank reads: (dim, start, end) half-open; None: whole


def share_slices(share: TensorShare, head_dim: int,
                 head_norms: tuple[str, ...] = ()) -> dict[str, tuple[int, int, int] | None]:
    """Which part of each layer tensor a rank reads: suffix -> (dim, start, end) half-open, None = whole.
    head_norms: the family's per-head norm weights (Qwen3's q_norm / k_norm), read whole.

    nn.Linear weights are (out_features, in_features): column-parallel layers take rows (dim 0),
    row-parallel layers take columns (dim 1).
    """
    q = (0, share.q_heads[0] * head_dim, share.q_heads[1] * head_dim)
    kv = (0, share.kv_heads[0] * head_dim, share.kv_heads[1] * head_dim)
    ffn_rows, ffn_cols = (0, *share.ffn), (1, *share.ffn)
    return {
        "input_layernorm.weight": None,
        "self_attn.q_proj.weight": q,
        "self_attn.k_proj.weight": kv,
        "self_attn.v_proj.weight": kv,
        "self_attn.o_proj.weight": (1, q[1], q[2]),
        "post_attention_layernorm.weight": None,
        "mlp.gate_proj.weight": ffn_rows,
        "mlp.up_proj.weight": ffn_rows,
        "mlp.down_proj.weight": ffn_cols,
        **{suffix: None for suffix in head_norms},
    }


def local_config(config, share: TensorShare):
    """The model config as one rank sees it: its head counts and MLP width, everything else unchanged."""
    local = copy.deepcopy(config)
    local.head_dim = _head_dim(config)  # pinned: the default hidden // heads would change with the heads
    local.num_attention_heads = share.n_q_heads
    local.num_key_value_heads = share.n_kv_heads
    local.intermediate_size = share.ffn_width
    return local


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _check_share(config, share: TensorShare) -> None:
    """The share must be exactly what tensor_shares gives this model (a stale or hand-made one is refused)."""
    shares = tensor_shares(config.num_attention_heads, config.num_key_value_heads, config.intermediate_size,
                           share.world)  # raises, listing the valid counts, for a world that cannot split
    if not 0 <= share.rank < share.world:
        raise ValueError(f"rank {share.rank} is outside 0..{share.world - 1}")
    if share != shares[share.rank]:
        raise ValueError(f"{share} is not rank {share.rank} of {share.world} for this model: "
                         f"expected {shares[share.rank]}")


class TensorSlice:
    """One rank's share of every decoder layer, as stock transformers modules with local sizes."""

    def __init__(self, model_dir: str | Path, share: TensorShare, dtype_name: str, gemv: bool = True):
        if dtype_name not in SUPPORTED_DTYPES:
            raise ValueError(f"tensor parallelism computes in {' or '.join(SUPPORTED_DTYPES)}, not {dtype_name!r}")
        self.config = config = load_config(model_dir)
        config._attn_implementation = decode_attention.implementation(gemv)  # one-token GQA on the kv heads
        self.family = model_family(config)
        decoder_layer, rotary_embedding, _ = self.family.classes()
        _check_share(config, share)
        self.share, self.dtype_name = share, dtype_name
        self.dtype = torch_dtype(dtype_name)
        self.hidden_size, self.head_dim = config.hidden_size, _head_dim(config)
        self.n_layers = config.num_hidden_layers
        self.loaded: dict[str, tuple[int, ...]] = {}  # tensor name -> shape of the part this rank read
        index, wanted = WeightIndex(model_dir), self._wanted()
        missing = [n for n in wanted if n not in index.file_of]  # all checked before anything is read
        if missing:
            raise KeyError(f"weights missing from {index.model_dir}: {missing[:5]}")
        layer_config = local_config(config, share)
        self.layers = torch.nn.ModuleList()
        for layer_index in range(self.n_layers):
            prefix = layer_prefix(layer_index)
            together = rows_together(prefix, dtype_name, gemv)  # this rank's q/k/v rows, gate/up rows: one matrix each
            names = [n for n in wanted if n.startswith(prefix)]
            # layer_idx = the model's layer index: each rank holds every layer, so it is also the KV cache slot.
            with torch.device("meta"):
                layer = decoder_layer(layer_config, layer_idx=layer_index)
            # every tensor present, none extra; int4: the float32 slices are quantized and freed in there
            fill_layer(layer, prefix, names,
                       lambda group: self._load_slices(index, {n: wanted[n] for n in group}, together), dtype_name,
                       together)
            self.layers.append(layer.eval())
        self.gemv_linears = use_gemv(self.layers) if gemv else 0  # float32 only; a no-op otherwise
        self.fast = FastDecode.of(self.layers) if gemv else None  # one token without the modules' glue
        self.rotary = rotary_embedding(config)
        self.weight_bytes = held_weight_bytes(self.layers, dtype_name)
        if dtype_name == "int4":
            release_freed_memory()  # the float32 slices before quantization
        # No release_freed_memory() for float32 / bfloat16 (DecoderSlice's gc + malloc_trim, ~0.35 s): each
        # slice is copied out of the mmap straight into its final dtype, so no temporary copy was freed.

    def _wanted(self) -> dict[str, Part]:
        """Every layer tensor this rank reads -> its part (share_slices)."""
        plan = share_slices(self.share, self.head_dim, self.family.head_norms)
        return {f"{layer_prefix(i)}{suffix}": part for i in range(self.n_layers) for suffix, part in plan.items()}

    def _load_slices(self, index: WeightIndex, wanted: dict[str, Part],
                     together: tuple[tuple[str, ...], ...] = ()) -> dict[str, torch.Tensor]:
        """The `wanted` parts (one layer's) for this rank, read with get_slice and copied out of the mmap once.

        safetensors' get_slice gives a view over the mmapped file; only the copy below materialises
        the slice. A row slice touches exactly its bytes; a column slice (o_proj, down_proj) touches a
        stretch of every row, so the page cache may read the whole matrix from disk (a 4 KB page holds
        a TinyLlama o_proj row), but this process keeps only its columns. `together`: groups of row parts
        copied straight into the rows of one matrix each (WeightIndex.load's rows_together).
        """
        full_shapes = self._full_shapes()
        tensors = self._rows_together(wanted, together)
        for path, names in index.by_file(wanted).items():
            with safe_open(path, framework="pt") as f:
                for name in names:
                    view = f.get_slice(name)
                    suffix = name.split(".", 3)[3]
                    if tuple(view.get_shape()) != full_shapes[suffix]:
                        raise ValueError(f"{name} in {path.name} is {tuple(view.get_shape())}, "
                                         f"but the config says {full_shapes[suffix]}")
                    part = wanted[name]
                    if part is None:
                        piece = view[:]
                    elif part[0] == 0:
                        piece = view[part[1]:part[2]]
                    else:
                        piece = view[:, part[1]:part[2]]
                    if name in tensors:  # its rows of a matrix loaded together
                        tensors[name].copy_(piece)
                    else:  # one copy, contiguous and owned: nothing of the mmapped file stays referenced
                        tensors[name] = piece.to(dtype=self.dtype, memory_format=torch.contiguous_format, copy=True)
                    self.loaded[name] = tuple(tensors[name].shape)
        return tensors

    def _rows_together(self, wanted: dict[str, Part], together) -> dict[str, torch.Tensor]:
        """Empty matrices for the groups of row parts, and each member's rows of them."""
        full, views = self._full_shapes(), {}
        for group in together:
            if not all(n in wanted and wanted[n] is not None and wanted[n][0] == 0 for n in group):
                continue  # only row parts stack as rows
            views.update(stacked_rows({n: wanted[n][2] - wanted[n][1] for n in group},
                                      full[group[0].split(".", 3)[3]][1], self.dtype))
        return views

    def _full_shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config
        hidden, q, kv = c.hidden_size, c.num_attention_heads * self.head_dim, c.num_key_value_heads * self.head_dim
        return {"input_layernorm.weight": (hidden,), "post_attention_layernorm.weight": (hidden,),
                "self_attn.q_proj.weight": (q, hidden), "self_attn.k_proj.weight": (kv, hidden),
                "self_attn.v_proj.weight": (kv, hidden), "self_attn.o_proj.weight": (hidden, q),
                "mlp.gate_proj.weight": (c.intermediate_size, hidden), "mlp.up_proj.weight": (c.intermediate_size, hidden),
                "mlp.down_proj.weight": (hidden, c.intermediate_size),
                **{suffix: (self.head_dim,) for suffix in self.family.head_norms}}

    def position_embeddings(self, start_pos: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin), each (1, T, head_dim) in the compute dtype, for positions [start_pos, start_pos + T)."""
        position_ids = torch.arange(start_pos, start_pos + seq_len).unsqueeze(0)
        return self.rotary(torch.empty(0, dtype=self.dtype), position_ids)

    @torch.inference_mode()
    def attention_partial(self, layer: int, x: torch.Tensor, cache: DynamicCache, start_pos: int,
                          position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: the full residual stream (1, T, hidden) at positions [start_pos, start_pos + T), the same on
        every rank -> this rank's partial attention output (1, T, hidden); appends its heads' K/V to cache."""
        seq_len = x.shape[1]
        cached = cache.get_seq_length(layer)
        if cached != start_pos:
            raise ValueError(f"layer {layer}: position {start_pos} does not follow the {cached} cached ones")
        if seq_len > 1 and start_pos > 0:
            # With no mask, transformers' sdpa path treats T > 1 as a prefill from 0: is_causal aligned
            # top-left and the keys cropped to the first T, wrong when the queries follow cached keys.
            raise ValueError(f"{seq_len} tokens at position {start_pos}: only a prefill (from 0) may hold "
                             "several tokens; later steps send one token each")
        if position_embeddings is None:
            position_embeddings = self.position_embeddings(start_pos, seq_len)
        if seq_len == 1 and self.fast is not None:
            return self.fast.attention(layer, x.to(self.dtype), position_embeddings, cache)
        block = self.layers[layer]
        normed = block.input_layernorm(x.to(self.dtype))
        # attention_mask None: SDPA applies the causal mask itself for T > 1 (as HF generate does).
        partial, _ = block.self_attn(hidden_states=normed, position_embeddings=position_embeddings,
                                     attention_mask=None, past_key_values=cache)
        return partial

    @torch.inference_mode()
    def mlp_partial(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """h: the full residual stream after attention (1, T, hidden) -> this rank's partial MLP output
        (1, T, hidden): down_proj columns of its ffn range applied to silu(gate) * up of the same range."""
        if h.shape[1] == 1 and self.fast is not None:
            return self.fast.mlp(layer, h.to(self.dtype))
        block = self.layers[layer]
        return block.mlp(block.post_attention_layernorm(h.to(self.dtype)))

    def forward_steps(self, x: torch.Tensor, cache: DynamicCache,
                      start_pos: int) -> Generator[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole forward of this rank as a coroutine: yields each partial (2 per layer), is sent back
        the sum over ranks, returns the output (1, T, hidden). Lets a test run N ranks in lock-step in one
        thread; `forward` drives it with a blocking allreduce."""
        x = x.to(self.dtype)
        position_embeddings = self.position_embeddings(start_pos, x.shape[1])
        for layer in range(self.n_layers):
            summed = yield self.attention_partial(layer, x, cache, start_pos, position_embeddings)
            h = x + summed.to(self.dtype)  # the sum may come back in float32 (the wire dtype): one cast here
            summed = yield self.mlp_partial(layer, h)
            x = h + summed.to(self.dtype)
        return x

    def forward(self, x: torch.Tensor, cache: DynamicCache, start_pos: int, allreduce: Allreduce) -> torch.Tensor:
        """x: (1, T, hidden) embeddings at positions [start_pos, start_pos + T) -> the last layer's output
        (1, T, hidden), identical on every rank. allreduce(partial) must return the sum over all ranks."""
        return drive(self.forward_steps(x, cache, start_pos), allreduce)


def drive(steps: Generator[torch.Tensor, torch.Tensor, torch.Tensor], allreduce: Allreduce) -> torch.Tensor:
    """Runs one rank's forward_steps to the end, answering every partial with allreduce(partial)."""
    partial = next(steps)
    while True:
        try:
            partial = steps.send(allreduce(partial))
        except StopIteration as done:
            return done.value


def lockstep_forward(slices: list[TensorSlice], x: torch.Tensor, caches: list[DynamicCache],
                     start_pos: int) -> torch.Tensor:
    """All ranks of one process in lock-step, summed by reduce_partials as the root will: the reference
    driver for tests and for a single-process tensor-parallel run. Returns rank 0's output."""
    if len(slices) != len(caches) or not slices:
        raise ValueError(f"{len(slices)} slices but {len(caches)} caches")
    runs = [s.forward_steps(x, c, start_pos) for s, c in zip(slices, caches)]
    partials = [next(run) for run in runs]
    while True:
        total = reduce_partials(partials)
        outputs, partials = [], []
        for run in runs:
            try:
                partials.append(run.send(total))
            except StopIteration as done:
                outputs.append(done.value)
        if outputs:
            if len(outputs) != len(runs):
                raise RuntimeError("ranks finished at different layers")
            return outputs[0]
