"""Completion tokens per second: the local sampler vs the vllm backend, same prompts, same LoRA.

    .venv/bin/python bench/sampling.py [--shape qwen05b|small] [--sequences 512] [--tokens 64]
                                       [--reps 3] [--threads 2]

Shapes (random weights built from a LlamaConfig, no download; the char tokenizer, so the
vocabulary is ~100 tokens, not Qwen's 151,936 — the LM head is far cheaper than the real one):
  qwen05b  hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864 (Qwen2.5-0.5B's shape)
  small    hidden 128, 4 layers, 4 heads (the `small` preset's shape)
A rank-16 LoRA on q/k/v/o with non-zero B is served by both sides. Every completion is forced
to `--tokens` tokens (EOS suppressed locally, ignore_eos in vLLM). The two sides alternate
(local, vllm, local, vllm, ...); the medians of `--reps` alternations and their ratio are
printed. vLLM's engine start-up is measured once and reported apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; without it vLLM sizes CPU memory by utilization

SHAPES = {
    "qwen05b": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                "num_key_value_heads": 2, "intermediate_size": 4864},
    "small": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 4, "intermediate_size": 512},
}
PROMPTS = [f"{a}+{b}=" for a, b in zip(range(10, 74), range(33, 97), strict=True)]


def build(shape: str, root: Path) -> tuple[Path, Path]:
    """A random model of `shape` and a rank-16 LoRA adapter for it, saved under `root`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from retrain.backend.local.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=512, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **SHAPES[shape])
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    peft_model.save_pretrained(root / "adapter")
    return root / "model", root / "adapter"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen05b")
    ap.add_argument("--sequences", type=int, default=512, help="B x G completions per call")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retrain.backend.local.sampler import sample

    root = Path(tempfile.mkdtemp(prefix="retrain-bench-sampling-"))
    model_dir, adapter_dir = build(args.shape, root)
    tok = AutoTokenizer.from_pretrained(model_dir)
    local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir)
    local.eval()
    no_eos = torch.zeros(len(tok))
    no_eos[tok.eos_token_id] = -float("inf")  # every completion runs to --tokens
    local.get_output_embeddings().register_forward_hook(lambda m, i, out: out + no_eos)
    g = max(1, args.sequences // len(PROMPTS))
    prompts = PROMPTS[: max(1, args.sequences // g)]
    n_seq = len(prompts) * g

    from vllm import LLM
    from vllm import SamplingParams as VllmSampling
    from vllm.lora.request import LoRARequest

    t0 = time.perf_counter()
    llm = LLM(model=str(model_dir), dtype="float32", enable_lora=True, max_loras=1, max_lora_rank=16,
              enforce_eager=True, max_model_len=256)
    lora = LoRARequest("bench", 1, str(adapter_dir))
    requests = [p for p in prompts for _ in range(g)]
    params = [VllmSampling(temperature=1.0, max_tokens=args.tokens, ignore_eos=True, seed=i)
              for i in range(n_seq)]
    llm.generate(requests[:4], params[:4], lora_request=lora, use_tqdm=False)  # warm-up
    startup = time.perf_counter() - t0

    def run_local() -> float:
        t = time.perf_counter()
        r = sample(local, tok, prompts, n_per_prompt=g, max_tokens=args.tokens, temperature=1.0,
                   top_p=1.0, seed=0, step=1)
        return r.num_generated_tokens / (time.perf_counter() - t)

    def run_vllm() -> float:
        t = time.perf_counter()
        outs = llm.generate(requests, params, lora_request=lora, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - t)

    local_tps, vllm_tps = [], []
    for rep in range(args.reps):
        local_tps.append(run_local())
        vllm_tps.append(run_vllm())
        print(f"rep {rep + 1}: local {local_tps[-1]:.0f} tok/s, vllm {vllm_tps[-1]:.0f} tok/s", flush=True)
    lm, vm = statistics.median(local_tps), statistics.median(vllm_tps)
    print(f"{args.shape}, {n_seq} completions x {args.tokens} tokens, {args.threads} threads, "
          f"LoRA r16: local {lm:.0f} tok/s, vllm {vm:.0f} tok/s (medians of {args.reps}); "
          f"vllm / local = {vm / lm:.2f}x; vLLM start-up + warm-up {startup:.0f} s")


if __name__ == "__main__":
    main()
