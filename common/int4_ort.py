"""4-bit weights multiplied as distributed-llama multiplies them: q40 codes times 8-bit activations, through
onnxruntime's MatMulNBits (its CPU kernels, MLAS, with integer dot products on AVX2, AVX-512 and NEON).

Why this and not torch's int4-packed matmul (common/int4.py's Int4Linear, kept for comparison): torch's
kernel dequantises every group to floats and multiplies in floating point, so without AVX-512 it is bound
by arithmetic, not by memory. MatMulNBits with accuracy_level 4 quantises each row of activations to int8
in blocks of 32 (distributed-llama's q80 for its q40 weights) and multiplies in integers. On a 2-vCPU AMD
EPYC (Zen 3, AVX2), one decode product of gate/up 5632 x 2048, cold cache: 1.02 ms against torch's 2.39 on
one thread, 0.55 against 1.13 on two (a first comparison, 8 copies); `python -m bench.int4_kernels --rounds 3
--pool-mib 128` later: 1.11 against 2.20 ms, 0.79 against 1.10 ms, and a 32-row prefill 12.7 against 25.3 ms.

The codes and scales are common/int4.py's (`quantize`: q40's rule, the scale rounded to bfloat16), so
`dequantize` is the reference either way; only the activations' 8-bit rounding differs from a float
product (tests/test_int4.py bounds it). The weights are held by onnxruntime: MLAS's own packed copy for its
kernel (codes, scales and a sum per block) and the float32 scales, given as external initializers so no copy
stays in the graph: common/dtypes.int4_matrix_bytes, 0.875 byte a weight. Each projection is a session of its own; with THREADS > 1 each session has a
pool of THREADS - 1 threads that sleep between products (spinning off: 88 sessions of spinning pools
stalled a 2-vCPU machine, 2.5 s a token).
"""
from __future__ import annotations

import numpy as np
import torch

from .dtypes import INT4_GROUP, int4_matrix_bytes

try:  # in the image (requirements.txt); without it the int4 dtype falls back to torch's kernel
    import onnxruntime as ort
    from onnx import TensorProto, helper
except ImportError:  # pragma: no cover - the image always has it
    ort = None

ACCURACY_INT8 = 4  # MatMulNBits accuracy_level: activations quantised to int8 per block, integer products
MS_DOMAIN = "com.microsoft"


def available() -> bool:
    return ort is not None


def _external(name: str, array: np.ndarray) -> "TensorProto":
    """An initializer that names its data without holding it: SessionOptions.add_external_initializers supplies it."""
    tensor = TensorProto(name=name, dims=array.shape, data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", f"{name}.in-memory"), ("offset", "0"), ("length", str(array.nbytes))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def _session(packed: np.ndarray, scales: np.ndarray, n: int, k: int, threads: int):
    node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain=MS_DOMAIN, K=k, N=n, bits=4,
                            block_size=INT4_GROUP, accuracy_level=ACCURACY_INT8)
    graph = helper.make_graph(
        [node], "int4_projection", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
        initializer=[_external("B", packed), _external("scales", scales)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS_DOMAIN, 1)])
    options = ort.SessionOptions()
    # The weights go in as external initializers, not inside the model: a model's own initializers stayed in
    # its graph beside MLAS's packed copy (17.35 MB held for 5632 x 2048, 1.5 bytes a weight); these are
    # copied in, B is released once MLAS has packed it, and our arrays can go (onnxruntime's documented
    # contract): 10.13 MB, 0.88 byte a weight, bit-identical products.
    options.add_external_initializers(["B", "scales"], [ort.OrtValue.ortvalue_from_numpy(packed),
                                                        ort.OrtValue.ortvalue_from_numpy(scales)])
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see the module docstring
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def pack_codes(codes: torch.Tensor) -> np.ndarray:
    """codes (N, K) in 0..15 -> MatMulNBits' B (N, K / 32, 16) uint8: two codes a byte, the first in the low nibble."""
    rows, cols = codes.shape
    c = codes.to(torch.uint8).reshape(rows, cols // INT4_GROUP, INT4_GROUP)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).contiguous().numpy()


class MatMulNBitsLinear(torch.nn.Module):
    """A bias-free nn.Linear whose weight is held as q40 codes by an onnxruntime session; float in, same dtype out."""

    def __init__(self, session, in_features: int, out_features: int, padded_in: int, padded_out: int):
        super().__init__()
        self.session = session
        self.in_features, self.out_features = in_features, out_features
        self.padded_in, self.padded_out = padded_in, padded_out
        self.held_weight_bytes = int4_matrix_bytes(out_features, in_features)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, threads: int | None = None) -> "MatMulNBitsLinear":
        """weight (out, in), any float dtype: quantised (common/int4.quantize), padded as Int4Linear pads."""
        from .int4 import padded, quantize
        rows, cols = weight.shape
        whole = padded(weight)
        padded_rows, padded_cols = whole.shape
        codes, scales = quantize(whole, torch.uint8)
        del whole
        session = _session(pack_codes(codes), scales.float().numpy(), padded_rows, padded_cols,
                           threads or torch.get_num_threads())
        return cls(session, cols, rows, padded_cols, padded_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.float32)
        if self.padded_in != self.in_features:
            flat = torch.nn.functional.pad(flat, (0, self.padded_in - self.in_features))
        (y,) = self.session.run(None, {"A": flat.contiguous().numpy()})
        out = torch.from_numpy(y)
        if self.padded_out != self.out_features:
            out = out[:, :self.out_features]
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group={INT4_GROUP}, onnxruntime"
