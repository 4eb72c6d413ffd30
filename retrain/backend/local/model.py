"""Load a causal LM and its tokenizer: a built tiny/small preset dir, a local HF dir, or a cached hub id.

Data flow: `[model]` ─▶ **load_model_and_tokenizer** ─▶ apply_lora (lora.py) ─▶ sampler / loss.

Tokenizers are set to left padding (batched decoding appends on the right) and get a pad token
if they have none, so every later stage can rely on `pad_token_id`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from retrain.errors import RetrainError


class ModelLoadError(RetrainError):
    """The model or tokenizer could not be found or loaded."""


DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
}


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else as given (checked for availability)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device: 'cuda' requested but torch sees no CUDA device")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("model.device: 'mps' requested but it is not available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on cuda when supported, else float32."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"model.dtype: {dtype!r} not supported; choose from {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_model_and_tokenizer(
    name_or_path: str,
    *,
    dtype: str,
    device: str,
    local_files_only: bool,
    trust_remote_code: bool,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.device]:
    """AutoModelForCausalLM + AutoTokenizer, moved to the device, in eval mode, left padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    from retrain.backend.local.hub import looks_local as _looks_local
    from retrain.backend.local.hub import model_source_problem

    problem = model_source_problem(name_or_path, local_files_only=local_files_only)
    if problem:  # before transformers: a missing offline model must not wait on the network
        raise ModelLoadError(problem)
    path = Path(name_or_path).expanduser()
    looks_local = _looks_local(name_or_path)
    source = str(path) if looks_local else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=local_files_only, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, local_files_only=local_files_only,
            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        hint = ("" if looks_local else
                " It is not in the local Hugging Face cache and the hub is not reachable offline; "
                "download it first or point model.name at a local directory.")
        raise ModelLoadError(f"model.name: cannot load {name_or_path!r}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.{hint}") from exc
    prepare_tokenizer(tokenizer, model)
    model.to(dev)  # type: ignore[arg-type]  # transformers' stub types .to's argument as a model
    model.eval()
    return model, tokenizer, dev


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> None:
    """Left padding; a pad token (eos, else unk) when the tokenizer has none."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            if model is not None:
                model.resize_token_embeddings(len(tokenizer))
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
