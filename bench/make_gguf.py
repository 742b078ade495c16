"""Random-weight GGUF files of real llama shapes, for speed work at sizes the bundled 135M model does not reach.

    python -m bench.make_gguf --shape 1.7b --type q4_0 [--out PATH] [--seed 0]
    python -m bench.make_gguf --shape qwen2.5-1.5b --type q4_0     (a qwen2 file: q/k/v biases)

Contract: the file is a plain `llama` GGUF (a `qwen2` one for the Qwen shapes: the same layers plus q/k/v biases, F32,
N(0, 0.02) like the matrices) that our loader (kernel/engine/loading) and llama.cpp (xllamacpp) both load: the shape's
dims (SHAPES: Llama-3.2-1B, SmolLM2-1.7B, Llama-3.2-3B, Qwen2.5-0.5B/1.5B; "tiny" and "qwen2-tiny" for tests), every
matrix in the chosen type (Q4_0 / Q4_1 / Q8_0 / F16, quantized by the `gguf` package's own quantizers, so the blocks are
what llama.cpp's tools would write), norms in F32 (ones), a tied embedding, and the bundled default model's tokenizer
(SmolLM2's vocabulary, merges and chat template copied from its GGUF), so the vocabulary size follows it. Weights are
N(0, 0.02): the text is nonsense, but every product costs what a trained model's does. The rope is plain (no llama3
scaling).

Streamed: the header and tensor table are written first, then one tensor at a time is drawn (torch's threaded normal
generator), quantized and appended, so peak memory is one matrix (fp32) and its codes, never the model. A 1 GB file
takes about half a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import gguf
import numpy as np
import torch

from kernel.engine.loading.checkpoint import default_model_path

WEIGHT_STD = 0.02


@dataclass(frozen=True)
class Shape:
    n_layers: int
    hidden: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    rope_theta: float
    context: int = 8192
    arch: str = "llama"  # "qwen2": q/k/v biases

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def qkv_bias(self) -> bool:
        return self.arch == "qwen2"


SHAPES = {
    "tiny": Shape(2, 64, 128, 4, 2, 10000.0, 2048),
    "1b": Shape(16, 2048, 8192, 32, 8, 500000.0),  # Llama-3.2-1B
    "1.7b": Shape(24, 2048, 8192, 32, 32, 130000.0),  # SmolLM2-1.7B
    "3b": Shape(28, 3072, 8192, 24, 8, 500000.0),  # Llama-3.2-3B
    "qwen2-tiny": Shape(2, 64, 128, 4, 2, 1000000.0, 2048, "qwen2"),
    "qwen2.5-0.5b": Shape(24, 896, 4864, 14, 2, 1000000.0, arch="qwen2"),  # Qwen2.5-0.5B
    "qwen2.5-1.5b": Shape(28, 1536, 8960, 12, 2, 1000000.0, arch="qwen2"),  # Qwen2.5-1.5B
}


class WeightType(Enum):
    Q4_0 = "q4_0"
    Q4_1 = "q4_1"
    Q8_0 = "q8_0"
    F16 = "f16"

    @property
    def ggml(self) -> gguf.GGMLQuantizationType:
        return gguf.GGMLQuantizationType[self.name]

    @property
    def file_type(self) -> gguf.LlamaFileType:
        return {
            "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
            "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
            "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "F16": gguf.LlamaFileType.MOSTLY_F16,
        }[self.name]


def tensor_plan(shape: Shape, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, numpy shape (rows, columns)) of every tensor, in file order; 1-D tensors are the norms and biases."""
    kv = shape.n_kv_heads * shape.head_dim
    plan: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (vocab, shape.hidden))]
    for i in range(shape.n_layers):
        plan += [
            (f"blk.{i}.attn_norm.weight", (shape.hidden,)),
            (f"blk.{i}.attn_q.weight", (shape.hidden, shape.hidden)),
            (f"blk.{i}.attn_k.weight", (kv, shape.hidden)),
            (f"blk.{i}.attn_v.weight", (kv, shape.hidden)),
            *(
                [
                    (f"blk.{i}.attn_q.bias", (shape.hidden,)),
                    (f"blk.{i}.attn_k.bias", (kv,)),
                    (f"blk.{i}.attn_v.bias", (kv,)),
                ]
                if shape.qkv_bias
                else []
            ),
            (f"blk.{i}.attn_output.weight", (shape.hidden, shape.hidden)),
            (f"blk.{i}.ffn_norm.weight", (shape.hidden,)),
            (f"blk.{i}.ffn_gate.weight", (shape.ffn, shape.hidden)),
            (f"blk.{i}.ffn_up.weight", (shape.ffn, shape.hidden)),
            (f"blk.{i}.ffn_down.weight", (shape.hidden, shape.ffn)),
        ]
    return plan + [("output_norm.weight", (shape.hidden,))]


def _copy_tokenizer(writer: gguf.GGUFWriter, source: gguf.GGUFReader) -> int:
    """Every tokenizer.* key of the source file, as stored; returns the vocabulary size."""
    for key, field in source.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        if main == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), main, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), main)
    return len(source.fields["tokenizer.ggml.tokens"].data)


def write_gguf(
    path: Path, shape: Shape, weight_type: WeightType, seed: int = 0, tokenizer_source: Path | None = None
) -> int:
    """Writes the file; returns its size in bytes."""
    source = gguf.GGUFReader(tokenizer_source or default_model_path())
    writer = gguf.GGUFWriter(path, shape.arch)
    writer.add_name(f"random-{shape.n_layers}x{shape.hidden}-{weight_type.value}")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(weight_type.file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocab = _copy_tokenizer(writer, source)
    writer.add_vocab_size(vocab)
    plan = tensor_plan(shape, vocab)
    qtype = weight_type.ggml
    for name, dims in plan:
        if len(dims) == 1:
            writer.add_tensor_info(name, dims, np.dtype(np.float32), dims[0] * 4)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor_info(name, dims, np.dtype(np.float16), dims[0] * dims[1] * 2)
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(dims, qtype)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), byte_shape[0] * byte_shape[1], qtype)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    generator = torch.Generator().manual_seed(seed)
    for name, dims in plan:
        if len(dims) == 1 and not name.endswith(".bias"):  # norms: ones (biases are drawn like the matrices)
            writer.write_tensor_data(np.ones(dims, dtype=np.float32))
            continue
        values = (torch.randn(dims, generator=generator) * WEIGHT_STD).numpy()
        if len(dims) == 1:
            writer.write_tensor_data(values)
            continue
        writer.write_tensor_data(gguf.quants.quantize(values, qtype))
    writer.close()
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.7b")
    parser.add_argument("--type", choices=[t.value for t in WeightType], default=WeightType.Q4_0.value)
    parser.add_argument("--out", default=None, help="default: /tmp/random-<shape>-<type>.gguf")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out or f"/tmp/random-{args.shape}-{args.type}.gguf")
    start = time.perf_counter()
    size = write_gguf(out, SHAPES[args.shape], WeightType(args.type), args.seed)
    print(f"{out}: {size / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
