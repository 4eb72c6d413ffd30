"""The training forward: log-probs of sampled tokens under the distribution they were sampled from.

Data flow: Rollouts ─▶ **build_batch / completion_logprobs** ─▶ policy_loss (step.py).

The sampler draws from softmax(logits / T) restricted to the top-p nucleus. This forward applies
the same temperature and nucleus (`sampler.process_logits`), so on-policy the importance ratio
new / old is 1 up to float noise, not the biased exp(logp_T=1 - logp_T) that comes from scoring
with raw logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from retrain.backend.local.sampler import Rollouts, entropy_of, positions_from_mask, process_logits


@dataclass
class TrainBatch:
    """A left-padded batch of prompt + completion; completions are right-aligned in the last C slots."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    targets: torch.Tensor  # [B, C] completion token ids (pad where target_mask is False)
    target_mask: torch.Tensor  # [B, C] bool: real completion tokens, row-major = rollout flat order


def build_batch(rollouts: Rollouts, seq_indices: list[int], pad_id: int,
                device: torch.device) -> TrainBatch:
    """Left-pad prompt + completion of the chosen sequences."""
    full = [rollouts.prompt_ids[i] + rollouts.completion_ids[i] for i in seq_indices]
    comp_len = [len(rollouts.completion_ids[i]) for i in seq_indices]
    width = max(len(s) for s in full)
    n_comp = max(1, max(comp_len))
    ids = torch.full((len(full), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(full), width), dtype=torch.long)
    targets = torch.full((len(full), n_comp), pad_id, dtype=torch.long)
    tmask = torch.zeros((len(full), n_comp), dtype=torch.bool)
    for row, (seq, c) in enumerate(zip(full, comp_len, strict=True)):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
        if c:
            targets[row, n_comp - c:] = torch.tensor(seq[len(seq) - c:], dtype=torch.long)
            tmask[row, n_comp - c:] = True
    return TrainBatch(ids.to(device), mask.to(device), positions_from_mask(mask).to(device),
                      targets.to(device), tmask.to(device))


def completion_logprobs(
    model: PreTrainedModel | PeftModel, batch: TrainBatch, *, temperature: float, top_p: float,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flat log-probs [n_tokens] (with grad) and entropies [n_tokens] (detached) of the completions.

    Only the last C + 1 positions are projected to the vocabulary (`logits_to_keep`): the prompt's
    logits are never needed.
    """
    n_comp = batch.targets.shape[1]
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, use_cache=False, logits_to_keep=n_comp + 1)
    logits = out.logits[:, :-1, :]  # [B, C, V]: position t predicts token t + 1
    logp = process_logits(logits, temperature, top_p, keep=batch.targets)  # [B, C, V]
    token_lp = logp.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)  # [B, C]
    flat_lp = token_lp[batch.target_mask]  # [n_tokens]
    flat_ent = entropy_of(logp.detach())[batch.target_mask] if with_entropy else None  # [n_tokens]
    return flat_lp, flat_ent
