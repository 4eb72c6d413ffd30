"""Seconds per RL step: TRL GRPOTrainer vs retrain's local backend, back to back, same setup.

Setup (issue 4): the `small` preset (Llama, hidden 128, 4 layers, char tokenizer, warmed up and
cached), 2-digit addition, B = 16 prompts x G = 8 completions, max_tokens 16, LoRA rank 16 on
all projections, beta 0, no gradient checkpointing, CPU, one torch thread for both.

    .venv/bin/python bench/step_vs_trl.py [--steps 30] [--threads 1] [--skip-trl]

Prints each side's median s/step (the first step is excluded as warm-up), the ratio, and where
retrain's time goes (generate / forward-backward / optimizer / other). Needs `retrain[bench]` (trl).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from retrain.config.schema import (  # noqa: E402
    DataConfig,
    LoraConfig,
    ModelConfig,
    OptimizerConfig,
    RetrainConfig,
    TrainingConfig,
)
from retrain.tasks import build_task  # noqa: E402

B, G, MAX_TOKENS, RANK, LR = 16, 8, 16, 16, 1e-4


def _model_path(warmup_steps: int) -> str:
    from retrain.backend.local.presets import resolve_model_path, warmup_task

    cfg = RetrainConfig(model=ModelConfig(name="small", warmup_steps=warmup_steps), data=DataConfig())
    return resolve_model_path(cfg, warmup_task(cfg), progress=True)


def bench_trl(model_path: str, steps: int) -> list[float]:
    from datasets import Dataset
    from peft import LoraConfig as PeftLoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    task = build_task(DataConfig(), 0)
    problems = task.train_problems(0, B * (steps + 1))
    data = Dataset.from_dict({"prompt": [p.prompt for p in problems],
                              "answer": [p.answer for p in problems]})

    def reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return [float(c.strip() == a) for c, a in zip(completions, answer, strict=True)]

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not stamps:
                stamps.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            stamps.append(time.perf_counter())

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    args = GRPOConfig(
        output_dir="/tmp/retrain-bench-trl", per_device_train_batch_size=B * G, num_generations=G,
        max_completion_length=MAX_TOKENS, max_steps=steps, learning_rate=LR, beta=0.0,
        use_vllm=False, use_cpu=True, gradient_checkpointing=False, report_to="none",
        save_strategy="no", logging_steps=10_000, temperature=1.0, top_p=1.0, shuffle_dataset=False,
        disable_tqdm=True, dataloader_num_workers=0, seed=0)
    peft_cfg = PeftLoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=list(LoraConfig().target_modules),
                              task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=tok, peft_config=peft_cfg, callbacks=[Clock()])
    trainer.train()
    return np.diff(stamps).tolist()


def bench_retrain(model_path: str, steps: int) -> tuple[list[float], dict[str, list[float]]]:
    from retrain.backend.local.lora import apply_lora
    from retrain.backend.local.model import load_model_and_tokenizer
    from retrain.backend.local.optim import build_optimizer
    from retrain.backend.local.sampler import sample
    from retrain.backend.local.step import train_step

    task = build_task(DataConfig(), 0)
    base, tok, device = load_model_and_tokenizer(model_path, dtype="float32", device="cpu",
                                                 local_files_only=True, trust_remote_code=False)
    torch.manual_seed(0)
    model = apply_lora(base, LoraConfig(rank=RANK, alpha=2.0 * RANK))
    opt_cfg = OptimizerConfig(lr=LR)
    tr_cfg = TrainingConfig(batch_size=B, group_size=G, max_tokens=MAX_TOKENS)
    optimizer, scheduler = build_optimizer(model, opt_cfg, max_steps=steps)
    totals: list[float] = []
    parts: dict[str, list[float]] = {"generate": [], "forward_backward": [], "optimizer": [],
                                     "other": [], "reward": []}
    for step in range(steps):
        t0 = time.perf_counter()
        problems = task.train_problems(step * B, B)
        roll = sample(model, tok, [p.prompt for p in problems], n_per_prompt=G,
                      max_tokens=MAX_TOKENS, temperature=1.0, top_p=1.0, seed=0, step=step,
                      device=device)
        rewards = np.array([float(task.is_correct(problems[i // G], c))
                            for i, c in enumerate(roll.completion_text)])
        groups = rewards.reshape(B, G)
        adv_N = ((groups - groups.mean(1, keepdims=True)) / (groups.std(1, keepdims=True) + 1e-6)).ravel()
        adv_T = np.repeat(adv_N, roll.lengths).astype(np.float32)
        m = train_step(model, optimizer, scheduler, roll, adv_T, cfg_training=tr_cfg,
                       cfg_optimizer=opt_cfg, micro_batch_size=0)
        t2 = time.perf_counter()
        totals.append(t2 - t0)
        parts["generate"].append(roll.timings["total_s"])
        parts["reward"].append(float(rewards.mean()))
        parts["forward_backward"].append(m["forward_backward_s"])
        parts["optimizer"].append(m["optimizer_s"])
        parts["other"].append((t2 - t0) - roll.timings["total_s"] - m["forward_backward_s"] - m["optimizer_s"])
    return totals, parts


def bench_sampler(model_path: str, reps: int = 5) -> None:
    """Own decode loop vs HF generate on one batch (B x G sequences, LoRA applied): tokens/s."""
    from retrain.backend.local.lora import apply_lora
    from retrain.backend.local.model import load_model_and_tokenizer
    from retrain.backend.local.sampler import sample

    base, tok, _ = load_model_and_tokenizer(model_path, dtype="float32", device="cpu",
                                            local_files_only=True, trust_remote_code=False)
    model = apply_lora(base, LoraConfig(rank=RANK, alpha=2.0 * RANK))
    prompts = [p.prompt for p in build_task(DataConfig(), 0).train_problems(0, B)]
    for label, temp in (("T=1.0", 1.0), ("T=3.0 (longer completions)", 3.0)):
        own, hf = [], []
        for rep in range(reps):
            t0 = time.perf_counter()
            roll = sample(model, tok, prompts, n_per_prompt=G, max_tokens=MAX_TOKENS,
                          temperature=temp, top_p=1.0, seed=0, step=rep)
            own.append(roll.num_generated_tokens / (time.perf_counter() - t0))
            enc = tok(prompts, return_tensors="pt", padding=True)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**{k: v.repeat_interleave(G, 0) for k, v in enc.items()},
                                     max_new_tokens=MAX_TOKENS, do_sample=True, temperature=temp,
                                     top_p=1.0, pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            n_tok = int((new != tok.pad_token_id).sum())  # generate pads after EOS
            hf.append(n_tok / (time.perf_counter() - t0))
        print(f"sampler {label}: own loop {statistics.median(own):,.0f} tok/s, "
              f"HF generate {statistics.median(hf):,.0f} tok/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup-steps", type=int, default=600, help="supervised warm-up of the small preset")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--sampler-only", action="store_true", help="only compare the decode loop with HF generate")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = _model_path(args.warmup_steps)
    print(f"model {path}; B={B} G={G} max_tokens={MAX_TOKENS} rank={RANK} steps={args.steps} "
          f"threads={args.threads}", flush=True)
    if args.sampler_only:
        bench_sampler(path)
        return
    trl_med = float("nan")
    if not args.skip_trl:
        trl_steps = bench_trl(path, args.steps)
        trl_med = statistics.median(trl_steps[1:] or trl_steps)
        print(f"TRL GRPOTrainer: {trl_med:.3f} s/step (median of {len(trl_steps) - 1}, first "
              f"{trl_steps[0]:.3f}s)", flush=True)
    totals, parts = bench_retrain(path, args.steps)
    med = statistics.median(totals[1:] or totals)
    print(f"retrain:         {med:.3f} s/step (median of {len(totals) - 1}, first {totals[0]:.3f}s)")
    if not np.isnan(trl_med):
        print(f"ratio retrain / TRL = {med / trl_med:.2f}x  (target <= 0.5x)")
    for key in ("generate", "forward_backward", "optimizer", "other"):
        v = statistics.median(parts[key][1:] or parts[key])
        print(f"  {key:17s} {v:.3f} s  ({v / med:.0%})")
    r = parts["reward"]
    print(f"retrain mean reward: first 5 steps {np.mean(r[:5]):.3f}, last 5 steps {np.mean(r[-5:]):.3f}")


if __name__ == "__main__":
    main()
