"""LoRA adapters with peft: only the adapter trains, the base model stays frozen.

Data flow: load_model_and_tokenizer ─▶ **apply_lora** ─▶ sampler / train_step / checkpoint.
The KL term of the loss reads the base model through `model.disable_adapter()`, so no second
copy of the weights is kept.
"""

from __future__ import annotations

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel

from retrain.config.schema import LoraConfig
from retrain.errors import RetrainError


class LoraTargetError(RetrainError):
    """A configured LoRA target module does not exist in the model."""


def present_targets(model: PreTrainedModel, wanted: tuple[str, ...]) -> list[str]:
    """The wanted module names (last path component) that occur among the model's Linear-like layers."""
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [w for w in wanted if w in leaf_names]


def apply_lora(model: PreTrainedModel, cfg: LoraConfig) -> PeftModel:
    """Wrap `model` with a LoRA adapter on the configured targets.

    The default list names the Llama-style projections and is filtered to those the model has;
    a list the user gave must exist in full (a typo would otherwise train fewer layers than
    asked, silently)."""
    targets = present_targets(model, tuple(cfg.target_modules))
    given = tuple(cfg.target_modules) != LoraConfig().target_modules
    missing = [t for t in cfg.target_modules if t not in targets] if given else []
    if missing or not targets:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if type(m).__name__ in ("Linear", "Conv1D")})
        raise LoraTargetError(
            f"lora.target_modules: {missing or list(cfg.target_modules)} not found in "
            f"{type(model).__name__}; its linear layers are named {leaves}")
    widths = [min(m.in_features, m.out_features) for n, m in model.named_modules()
              if n.rsplit(".", 1)[-1] in targets and hasattr(m, "in_features") and hasattr(m, "out_features")]
    if widths and cfg.rank > min(widths):  # checked before peft allocates rank x width matrices
        raise LoraTargetError(f"lora.rank: a LoRA update cannot have a higher rank than its layer; "
                              f"the smallest adapted layer of {type(model).__name__} is "
                              f"{min(widths)} wide, got {cfg.rank}")
    peft_cfg = PeftLoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # peft takes floats at runtime
        lora_dropout=cfg.dropout, target_modules=targets,
        use_rslora=cfg.use_rslora, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, peft_cfg)


def lora_parameter_counts(model: PeftModel) -> dict[str, int]:
    """{'trainable': adapter params, 'total': all params, 'base': frozen params}."""
    trainable, total = model.get_nb_trainable_parameters()
    return {"trainable": int(trainable), "total": int(total), "base": int(total - trainable)}
