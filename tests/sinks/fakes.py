"""A fake step loop: contract-complete metrics dicts, RunInfo and generations for sink tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrain.sinks.base import RunInfo

CONFIG: dict[str, dict[str, Any]] = {
    "model": {"name": "tiny"},
    "lora": {"rank": 8, "alpha": 16.0, "target_modules": ("q_proj", "v_proj")},
    "backend": {"name": "local"},
    "algorithm": {"advantage_mode": "maxrl", "transform_mode": "gtpo_sepa",
                  "uncertainty_kind": "surprisal"},
    "training": {"seed": 7, "max_steps": 8, "batch_size": 4, "group_size": 4, "max_tokens": 8,
                 "temperature": 1.0},
    "optimizer": {"lr": 1e-3},
    "gtpo": {"beta": 0.1},
    "hicra": {"alpha": 0.2},
    "sepa": {"steps": 20, "delay_steps": 2, "correct_rate_gate": 0.1},
}


def fake_metrics(step: int, *, condition: str = "maxrl+gtpo_sepa") -> dict[str, Any]:
    """One step's metrics as the loop builds them (every contract field, right types)."""
    loss = 1.0 / step
    reward = 0.1 * step
    return {
        "step": step, "condition": condition, "loss": loss, "reported_loss": loss,
        "loss_is_placeholder": False, "backend_reports_sync_loss": True,
        "backend_preserves_token_advantages": True, "mean_reward": reward,
        "correct_rate": reward, "running_correct_rate": reward / 2, "sepa_lambda": 0.05 * step,
        "sepa_gate_open": step > 2, "num_datums": 16, "max_token_hit_rate": 0.25,
        "step_time_s": 0.5, "batch_size": 4, "group_size": 4, "bp_action": "hold",
        "bp_regime": "warmup", "uncertainty_kind": "surprisal",
        "exec_entropy_mean": 1.5, "exec_entropy_var": 0.2, "plan_entropy_mean": None,
        "plan_entropy_var": None, "exec_surprisal_mean": 1.5, "exec_surprisal_var": 0.2,
        "plan_surprisal_mean": None, "plan_surprisal_var": None,
        "correct_count": step, "total_count": 16,
        "sample_time_s": 0.3, "reward_time_s": 0.01, "advantage_time_s": 0.001,
        "train_time_s": 0.18, "tokens_per_s": 256.0, "grad_norm": 0.7, "clip_frac": 0.0,
        "kl": None, "lr": 1e-3, "skipped_groups": 1, "skipped_groups_total": step,
        "bp_p_star": None, "bp_sigma": None, "bp_kappa": None, "bp_utilization": None,
        "bp_throughput": 512.0, "bp_warmup": True,
    }


def make_info(run_dir: Path, *, start_step: int = 0, max_steps: int = 8, seed: int = 7,
              condition: str = "maxrl+gtpo_sepa") -> RunInfo:
    return RunInfo(run_name=f"{condition}_s{seed}", condition=condition, seed=seed,
                   run_dir=run_dir, max_steps=max_steps, start_step=start_step, config=CONFIG,
                   resumed=start_step > 0)


def generations(step: int, prompts: int = 2, per_prompt: int = 3) -> list[dict[str, Any]]:
    return [{"prompt": f"P{p}: what is {p}+{step}? " + "x" * 300,
             "completion": f"answer {g} " + "y" * 600, "reward": float(g == 0),
             "num_tokens": 5 + g}
            for p in range(prompts) for g in range(per_prompt)]
