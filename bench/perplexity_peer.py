"""One GGUF file, three readers: our engine (each weights mode that applies), HF transformers and llama.cpp, on the
same tokens of a fixed text.

    python -m bench.perplexity_peer PATH.gguf [--modes fp32,bf16,int8,int4] [--tokens 400] [--threads 2]

Printed per row: load time (file → a model ready to run), resident memory after the load (VmRSS, and the peak
VmHWM over load and the perplexity run), the file's size, and perplexity on the first --tokens tokens of
bench/texts/kernel_notes.txt (a BOS token first). Each row runs in a child process of its own, so one reader's memory
and threads never count toward another's; llama.cpp's child runs with OpenMP's defaults (our engine's
OMP_WAIT_POLICY / GOMP_SPINCOUNT removed, as bench/llama_server.py does), as a user would run it.

Ours: fp32 is the file's own weights dequantized by gguf's reference code and computed in float32 — the reference the
other modes are measured against (ratio column); bf16, int8 and int4 compute in bfloat16, what aiosd's --weights auto
chooses among, with the file's K-quant / Q5_0 matrices dequantized once and re-quantized to the engine's int8/int4
(quant_weights.py). HF: transformers' GGUF loader (the same reference dequantizer) in float32. llama.cpp: the file's
own quantized kernels; each position's log-probability is read from its server (xllamacpp, in process, no HTTP) by
forcing the text's next token with a logit bias and reading that token's probability, which llama.cpp computes from
the raw logits before sampling (post_sampling_probs false); a cached prefix makes each position one decode step.

The text's tokens come from the file's tokenizer as HF transformers reads it (our TextTokenizer does not read
SentencePiece-style GGUF vocabularies yet); every reader is fed the same ids.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

TEXT = Path(__file__).parent / "texts" / "kernel_notes.txt"
OURS_MODES = ("fp32", "bf16", "int8", "int4")
_LOGIT_FORCE = 1000.0  # far above any logit gap: the forced token is the sampled one


def memory_mib() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def text_token_ids(path: Path, n_tokens: int, text: str | None = None) -> list[int]:
    """BOS + the text's first n_tokens - 1 tokens, by the file's own tokenizer as transformers reads it."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ids = tok(text if text is not None else TEXT.read_text(), add_special_tokens=False)["input_ids"]
    return [tok.bos_token_id, *ids[: n_tokens - 1]]


def load_ours(path: Path, mode: str):
    """(model, seconds) for one weights mode: the loader and model build aiosd runs, tokenizer aside."""
    import torch

    from kernel.engine.cpu.model import LlamaModel
    from kernel.engine.loading import gguf_loader

    dtype = torch.float32 if mode == "fp32" else torch.bfloat16
    start = time.perf_counter()
    reader = gguf_loader.read_gguf(path)
    cfg = gguf_loader.config_from_metadata(gguf_loader.gguf_metadata(reader), path)
    cfg, weights = gguf_loader.load_gguf_weights(reader, cfg, torch.float32, path, quantized=mode in ("int4", "int8"))
    model = LlamaModel(cfg, weights, dtype, mode)
    del weights, reader
    return model, time.perf_counter() - start


def run_ours(path: Path, mode: str, ids: list[int]) -> dict:
    import gc

    from kernel.engine.cpu.quant_select import perplexity

    model, seconds = load_ours(path, mode)
    gc.collect()
    rss = memory_mib()[0]
    return {"load_s": seconds, "rss_mib": rss, "ppl": perplexity(model, ids)}


def hf_model(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def run_hf(path: Path, ids: list[int]) -> dict:
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    model = hf_model(path)
    seconds = time.perf_counter() - start
    rss = memory_mib()[0]
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="mean").item()
    return {"load_s": seconds, "rss_mib": rss, "ppl": math.exp(nll)}


def run_llamacpp(path: Path, ids: list[int], threads: int) -> dict:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = max(512, len(ids) + 16)
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    start = time.perf_counter()
    server = xllamacpp.Server(params)
    seconds = time.perf_counter() - start
    rss = memory_mib()[0]
    nll = 0.0
    for i in range(1, len(ids)):
        reply = server.handle_completions(
            {
                "prompt": ids[:i],
                "n_predict": 1,
                "n_probs": 1,
                "temperature": 0,
                "cache_prompt": True,
                "post_sampling_probs": False,
                "logit_bias": [[ids[i], _LOGIT_FORCE]],
            }
        )
        if "error" in reply:
            raise RuntimeError(f"llama.cpp: {reply['error']}")
        entry = reply["choices"][0]["logprobs"]["content"][0]
        if entry["id"] != ids[i]:
            raise RuntimeError(f"llama.cpp sampled {entry['id']} where {ids[i]} was forced at position {i}")
        nll -= entry["logprob"]
    return {"load_s": seconds, "rss_mib": rss, "ppl": math.exp(nll / (len(ids) - 1))}


def child(args) -> None:
    ids = json.loads(Path(args.ids).read_text())
    path = Path(args.path)
    if args.child == "hf":
        result = run_hf(path, ids)
    elif args.child == "llama.cpp":
        result = run_llamacpp(path, ids, args.threads)
    else:
        result = run_ours(path, args.child.removeprefix("ours:"), ids)
    result["peak_mib"] = memory_mib()[1]
    print(json.dumps(result), flush=True)


def measure(path: Path, reader: str, ids_file: Path, threads: int) -> dict:
    from kernel.engine.process_env import configure_process_env, without_engine_openmp

    env = dict(os.environ)
    if reader == "llama.cpp":
        env = without_engine_openmp(env)
    else:
        env.setdefault("OMP_NUM_THREADS", str(threads))
        if reader.startswith("ours"):
            configure_process_env(env)  # the child runs our engine: aiosd's settings, set before its torch loads
    argv = [
        sys.executable,
        "-m",
        "bench.perplexity_peer",
        str(path),
        "--child",
        reader,
        "--ids",
        str(ids_file),
        "--threads",
        str(threads),
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--modes", default=",".join(OURS_MODES))
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    import tempfile

    path = Path(args.path).resolve()
    ids = text_token_ids(path, args.tokens)
    readers = [f"ours:{m}" for m in args.modes.split(",") if m] + ["hf", "llama.cpp"]
    size_mib = path.stat().st_size / 2**20
    print(f"{path.name}: {size_mib:.1f} MiB, {len(ids)} tokens of {TEXT.name}, {args.threads} threads")
    print(f"{'reader':<12} {'load s':>7} {'RSS MiB':>8} {'peak MiB':>9} {'ppl':>9} {'vs fp32':>8} {'vs llama.cpp':>12}")
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(ids, f)
        f.flush()
        rows = {reader: measure(path, reader, Path(f.name), args.threads) for reader in readers}
    ref, peer = rows.get("ours:fp32", {}).get("ppl"), rows["llama.cpp"].get("ppl")
    for reader, row in rows.items():
        if "error" in row:
            print(f"{reader:<12} failed: {row['error']}")
            continue
        ratio = lambda base, row=row: f"{row['ppl'] / base:.4f}" if base else "-"
        print(
            f"{reader:<12} {row['load_s']:>7.2f} {row['rss_mib']:>8.0f} {row['peak_mib']:>9.0f} {row['ppl']:>9.3f} "
            f"{ratio(ref):>8} {ratio(peer):>12}"
        )


if __name__ == "__main__":
    main()
