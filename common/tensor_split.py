"""How every decoder layer is divided among N workers in tensor-parallel mode: pure, no torch.

Each rank owns a contiguous run of query heads, the key/value heads those query heads read, and a
contiguous run of the MLP's intermediate width. The rule for N is vLLM's (QKVParallelLinear in
vllm/model_executor/layers/linear.py): N divides the query heads; if N <= the KV heads, N divides
them too and each rank owns kv/N of them; if N > the KV heads, N is a multiple of them and each KV
head is replicated on N/kv ranks (`num_kv_head_replicas`), rank r holding KV head r // (N/kv).
Unlike vLLM (which requires N to divide the intermediate size), an uneven MLP width is allowed: the
first ranks take one column more, as `split.even_counts` does for layers.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorShare:
    """Rank `rank` of `world`: its part of every decoder layer. Ranges are half-open [start, end)."""
    rank: int
    world: int
    q_heads: tuple[int, int]   # query heads [start, end): rows of q_proj, columns of o_proj
    kv_heads: tuple[int, int]  # key/value heads [start, end): rows of k_proj and v_proj (maybe shared)
    ffn: tuple[int, int]       # MLP intermediate columns [start, end): rows of gate/up, columns of down

    @property
    def n_q_heads(self) -> int:
        return self.q_heads[1] - self.q_heads[0]

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads[1] - self.kv_heads[0]

    @property
    def ffn_width(self) -> int:
        return self.ffn[1] - self.ffn[0]

    def label(self) -> str:
        """For logs and the cluster panel; inclusive ends, like Shard.label: 'q 0-1 kv 0 ffn 0-87'."""
        def span(r: tuple[int, int]) -> str:
            return str(r[0]) if r[1] - r[0] == 1 else f"{r[0]}-{r[1] - 1}"
        return f"q {span(self.q_heads)} kv {span(self.kv_heads)} ffn {span(self.ffn)}"

    def layer_params(self, hidden_size: int, head_dim: int) -> int:
        """Parameters this rank holds per decoder layer: its projection slices and both full norms."""
        q, kv = self.n_q_heads * head_dim, self.n_kv_heads * head_dim
        return hidden_size * (2 * q + 2 * kv + 3 * self.ffn_width) + 2 * hidden_size

    def linear_shapes(self, hidden_size: int, head_dim: int) -> tuple[tuple[int, int], ...]:
        """(out, in) of this rank's 7 projection slices: q, k, v, o, gate, up, down (int4 pads each one)."""
        q, kv, ffn = self.n_q_heads * head_dim, self.n_kv_heads * head_dim, self.ffn_width
        return ((q, hidden_size), (kv, hidden_size), (kv, hidden_size), (hidden_size, q),
                (ffn, hidden_size), (ffn, hidden_size), (hidden_size, ffn))

    def to_dict(self) -> dict:
        return {"rank": self.rank, "world": self.world, "q_heads": list(self.q_heads),
                "kv_heads": list(self.kv_heads), "ffn": list(self.ffn)}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorShare":
        return cls(rank=int(d["rank"]), world=int(d["world"]), q_heads=_pair(d["q_heads"]),
                   kv_heads=_pair(d["kv_heads"]), ffn=_pair(d["ffn"]))


def _pair(value) -> tuple[int, int]:
    start, end = value
    return int(start), int(end)


def _check_model(n_heads: int, n_kv_heads: int, intermediate_size: int) -> None:
    if n_heads < 1 or n_kv_heads < 1 or intermediate_size < 1:
        raise ValueError(f"heads {n_heads}, kv heads {n_kv_heads} and intermediate size {intermediate_size} "
                         "must all be positive")
    if n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads do not group evenly over {n_kv_heads} key/value heads")


def tensor_count_fits(n_heads: int, n_kv_heads: int, intermediate_size: int, n: int) -> bool:
    """True when n ranks can share every layer by vLLM's rule (see the module docstring)."""
    if n < 1 or n_heads % n or n > intermediate_size:
        return False
    return n_kv_heads % n == 0 if n <= n_kv_heads else n % n_kv_heads == 0


def valid_tensor_counts(n_heads: int, n_kv_heads: int, intermediate_size: int) -> list[int]:
    """Every worker count that can split this model's layers: [1, 2, 4] for 4 heads / 2 KV heads."""
    _check_model(n_heads, n_kv_heads, intermediate_size)
    return [n for n in range(1, n_heads + 1) if tensor_count_fits(n_heads, n_kv_heads, intermediate_size, n)]


def even_ranges(size: int, n: int) -> list[tuple[int, int]]:
    """[0, size) in n contiguous ranges; the first size % n ranges are one wider."""
    base, extra = divmod(size, n)
    ranges, start = [], 0
    for i in range(n):
        end = start + base + (1 if i < extra else 0)
        ranges.append((start, end))
        start = end
    return ranges


def tensor_shares(n_heads: int, n_kv_heads: int, intermediate_size: int, n: int) -> list[TensorShare]:
    """Rank i's share of every layer, for n ranks; ValueError listing the valid n otherwise."""
    _check_model(n_heads, n_kv_heads, intermediate_size)
    if not tensor_count_fits(n_heads, n_kv_heads, intermediate_size, n):
        valid = valid_tensor_counts(n_heads, n_kv_heads, intermediate_size)
        raise ValueError(
            f"tensor parallelism cannot split {n_heads} query heads / {n_kv_heads} key/value heads over {n} "
            f"workers; valid worker counts for this model: {', '.join(map(str, valid))}")
    q_per_rank = n_heads // n
    ffn = even_ranges(intermediate_size, n)
    shares = []
    for rank in range(n):
        if n <= n_kv_heads:
            kv_per_rank = n_kv_heads // n
            kv = (rank * kv_per_rank, (rank + 1) * kv_per_rank)
        else:
            kv_head = rank // (n // n_kv_heads)  # vLLM: tp_rank // num_kv_head_replicas
            kv = (kv_head, kv_head + 1)
        shares.append(TensorShare(rank=rank, world=n, q_heads=(rank * q_per_rank, (rank + 1) * q_per_rank),
                                  kv_heads=kv, ffn=ffn[rank]))
    return shares
