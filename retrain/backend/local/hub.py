"""Where `model.name` points, checked without torch and without the network.

A preset ('tiny', 'small') is built locally; a path must be a model directory (config.json); a Hub
id with `model.local_files_only = true` must already be in the Hugging Face cache. The cache is
looked up on disk (huggingface_hub.try_to_load_from_cache), so a missing model is refused at
once: no DNS lookup, no 10-60 s wait for a connection that cannot succeed.
"""

from __future__ import annotations

from pathlib import Path


def looks_local(name: str) -> bool:
    """A filesystem path rather than a Hub id."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~"))


def model_source_problem(name: str, *, local_files_only: bool) -> str | None:
    """Why `model.name` cannot load, or None (also None when only the network could tell)."""
    from retrain.backend.local.cache import PRESETS

    if name in PRESETS:
        return None
    if looks_local(name):
        if not (Path(name).expanduser() / "config.json").is_file():
            return f"model.name: {name!r} is not a model directory (no config.json there)"
        return None
    if not local_files_only:
        return None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        return (f"model.name: {name!r} is neither 'tiny', 'small', a local model directory nor a "
                "Hub id like 'org/model'")
    if not isinstance(cached, str):
        return (f"model.name: {name!r} is not in the Hugging Face cache and "
                "model.local_files_only = true forbids downloading it; download it first "
                f"(`huggingface-cli download {name}`), point model.name at a local directory, or "
                "set model.local_files_only = false")
    return None
