"""`retrain analyze weight-change`: how far apart two LoRA adapters put the model's weights.

Sits after training, next to `squeeze`: a multi-phase run (docs/phases.md) measures each phase's
final adapter against the previous phase's with `weight_change(previous, current, base=...)`,
and the CLI compares any two adapter dirs. Per LoRA module ΔW = s · B @ A, with peft's scale
s = lora_alpha / r (lora_alpha / √r with `use_rslora`), r and lora_alpha taken per module from
`rank_pattern` / `alpha_pattern` when adapter_config.json has them. The change of a module is
‖ΔW_B − ΔW_A‖_F; its relative change divides that by ‖W0‖_F, the base weight the module adapts.
The two adapters may differ in rank (a squeezed adapter against its original): only the shape
of ΔW must agree.

Tensors are read through safetensors' numpy API (bfloat16 from its raw bytes, which numpy cannot
type); torch is never imported, so the command starts as fast as the other `analyze` commands.
Norms of the rank-r products come from an r×r-sized QR, never the [out, in] matrix, so a 7B
model's adapters compare in seconds.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import RenderableType

from retrain.analysis.formats import (
    OutputFormat,
    csv_text,
    fmt_number,
    json_text,
    markdown_table,
    rich_table,
)
from retrain.analysis.loading import AnalysisError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
BASE_SINGLE = "model.safetensors"
BASE_INDEX = "model.safetensors.index.json"
_PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the base model's module names
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: ΔW = scale · b @ a, a [r, in] and b [out, r] in float64."""

    a: np.ndarray
    b: np.ndarray
    scale: float

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.b.shape[0]), int(self.a.shape[1])


@dataclass(frozen=True)
class Adapter:
    path: Path
    config: dict[str, object]
    modules: dict[str, LoraModule]  # module name as in the base model (model.layers.0.self_attn.q_proj)


@dataclass(frozen=True)
class ModuleChange:
    module: str
    shape: tuple[int, int]
    rank_a: int
    rank_b: int
    norm_a: float  # ‖ΔW_A‖_F
    norm_b: float  # ‖ΔW_B‖_F
    change: float  # ‖ΔW_B − ΔW_A‖_F
    base_norm: float | None  # ‖W0‖_F; None without a base model

    @property
    def relative(self) -> float | None:
        return None if self.base_norm is None else _ratio(self.change, self.base_norm)

    def to_dict(self) -> dict[str, object]:
        return {"module": self.module, "shape": list(self.shape), "rank_a": self.rank_a,
                "rank_b": self.rank_b, "norm_a": self.norm_a, "norm_b": self.norm_b,
                "change": self.change, "base_norm": self.base_norm, "relative": self.relative}


@dataclass(frozen=True)
class WeightChange:
    """The change from adapter A to adapter B; totals are root sums of squares over modules."""

    adapter_a: Path
    adapter_b: Path
    base: Path | None
    base_source: str  # where the base came from, or why there is none
    modules: list[ModuleChange]

    def _total(self, values: Iterable[float]) -> float:
        return math.sqrt(sum(v * v for v in values))

    @property
    def norm_a(self) -> float:
        return self._total(m.norm_a for m in self.modules)

    @property
    def norm_b(self) -> float:
        return self._total(m.norm_b for m in self.modules)

    @property
    def change(self) -> float:
        return self._total(m.change for m in self.modules)

    @property
    def base_norm(self) -> float | None:
        if self.base is None:
            return None
        return self._total(m.base_norm or 0.0 for m in self.modules)

    @property
    def relative(self) -> float | None:
        """sqrt(Σ change²) / sqrt(Σ ‖W0‖²) over modules; None without a base model."""
        base = self.base_norm
        return None if base is None else _ratio(self.change, base)

    def to_dict(self, *, per_module: bool = True) -> dict[str, object]:
        total = {"modules": len(self.modules), "norm_a": self.norm_a, "norm_b": self.norm_b,
                 "change": self.change, "base_norm": self.base_norm, "relative": self.relative}
        out: dict[str, object] = {"adapter_a": str(self.adapter_a), "adapter_b": str(self.adapter_b),
                                  "base": None if self.base is None else str(self.base),
                                  "base_source": self.base_source, "total": total}
        if per_module:
            out["modules"] = [m.to_dict() for m in self.modules]
        return out


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


# --- reading -------------------------------------------------------------------------------------


def resolve_adapter_dir(path: Path) -> Path:
    """`path` itself when it holds adapter_config.json, else a run dir's `adapter/` (the squeeze
    reader's rule, its errors as analysis errors)."""
    from retrain.squeeze.adapter import SqueezeError
    from retrain.squeeze.adapter import resolve_adapter_dir as resolve

    try:
        return resolve(path)
    except SqueezeError as exc:
        raise AnalysisError(str(exc)) from None


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header of a .safetensors file and the offset of its data (format: u64 length, JSON)."""
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > path.stat().st_size - 8:
                raise ValueError(f"header length {length} exceeds the file")
            header = json.loads(fh.read(length))
    except (struct.error, ValueError) as exc:  # ValueError: bad JSON or UTF-8
        raise AnalysisError(f"{path}: not a safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise AnalysisError(f"{path}: not a safetensors file (its header is not an object)")
    return header, 8 + length


def _bf16(path: Path, name: str) -> np.ndarray:
    """A bfloat16 tensor widened to float32 (its 16 bits are the high half of a float32)."""
    header, start = _safetensors_header(path)
    info = header[name]
    begin, end = (int(x) for x in info["data_offsets"])
    raw = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=start + begin)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape([int(d) for d in info["shape"]])


def iter_tensors(path: Path, names: Iterable[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) for `names` (default: every tensor) of a .safetensors file, one at a time."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            for name in list(fh.keys()) if names is None else names:
                try:
                    array = fh.get_tensor(name)
                except TypeError:  # "data type 'bfloat16' not understood"
                    array = _bf16(path, name)
                yield name, array
    except Exception as exc:  # SafetensorError (a Rust type) for truncated or corrupt files
        raise AnalysisError(f"{path}: cannot read ({exc})") from None


def _read_config(adapter_dir: Path) -> dict[str, object]:
    """adapter_config.json of a LoRA adapter (read as squeeze reads it); DoRA and LoRA-bias
    adapters are refused: their weight change is not s·B@A."""
    from retrain.squeeze.adapter import SqueezeError, read_config

    try:
        config = read_config(adapter_dir)
    except SqueezeError as exc:
        raise AnalysisError(str(exc)) from None
    if config.get("use_dora") or config.get("lora_bias"):
        # DoRA rescales W0 + ΔW by a learned magnitude; a LoRA bias adds a second term
        raise AnalysisError(f"{adapter_dir / CONFIG_NAME}: DoRA and LoRA-bias adapters are not "
                            "supported (their weight change is not s·B@A)")
    return config


def _pattern_value(patterns: object, module: str, default: float) -> float:
    """peft's rank_pattern/alpha_pattern lookup (peft.utils.other.get_pattern_key): the first
    pattern that matches the end of the module name at a dot boundary."""
    if not isinstance(patterns, Mapping):
        return default
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return float(value)
    return default


def module_scale(config: Mapping[str, object], module: str, rank: int) -> float:
    """peft's scale of one module: lora_alpha / r, or lora_alpha / √r with use_rslora.

    `rank` is the rank stored in the weights; the rank the config gives the module (rank_pattern,
    else r) must agree with it, or the scale would be wrong."""
    r_default = config.get("r", rank)
    alpha_default = config.get("lora_alpha", r_default)
    if not isinstance(r_default, int | float) or not isinstance(alpha_default, int | float):
        raise AnalysisError(f"{CONFIG_NAME}: r and lora_alpha must be numbers")
    configured = _pattern_value(config.get("rank_pattern"), module, float(r_default))
    if configured != rank:
        raise AnalysisError(f"{CONFIG_NAME} gives module {module} rank {configured:g} but its "
                            f"lora_A has {rank} rows")
    alpha = _pattern_value(config.get("alpha_pattern"), module, float(alpha_default))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def read_adapter(path: Path) -> Adapter:
    """The LoRA modules of an adapter dir (or a run dir's `adapter/`), with their scales."""
    adapter_dir = resolve_adapter_dir(path)
    config = _read_config(adapter_dir)
    weights = adapter_dir / WEIGHTS_NAME
    if not weights.is_file():
        raise AnalysisError(f"{adapter_dir}: no {WEIGHTS_NAME} next to {CONFIG_NAME} (an adapter "
                            "saved with safe_serialization=False is not read)")
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, array in iter_tensors(weights):
        m = _LORA_KEY.match(key)
        if m is None:
            raise AnalysisError(f"{weights}: tensor {key} is not a LoRA factor (lora_A/lora_B "
                                "weight); embedding LoRA and modules_to_save are not supported")
        module = m["module"].removeprefix(_PEFT_PREFIX)
        halves.setdefault(module, {})[m["which"]] = array.astype(np.float64)
    if not halves:
        raise AnalysisError(f"{weights}: holds no LoRA tensors")
    modules: dict[str, LoraModule] = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            raise AnalysisError(f"{weights}: module {module} has no lora_{'B' if 'A' in pair else 'A'}")
        a, b = pair["A"], pair["B"]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
            raise AnalysisError(f"{weights}: module {module}: lora_A {a.shape} and lora_B {b.shape} "
                                "are not [r, in] and [out, r] matrices")
        try:
            scale = module_scale(config, module, int(a.shape[0]))
        except AnalysisError as exc:
            raise AnalysisError(f"{adapter_dir}: {exc}") from None
        modules[module] = LoraModule(a, b, scale)
    return Adapter(adapter_dir, config, modules)


# --- the base model ------------------------------------------------------------------------------


def base_weight_files(model_dir: Path) -> dict[str, Path] | None:
    """Tensor name -> file of a saved model (model.safetensors, or shards with their index);
    None when `model_dir` is not such a dir."""
    model_dir = Path(model_dir)
    index = model_dir / BASE_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise AnalysisError(f"{index}: not a safetensors index ({exc})") from None
        return {str(k): model_dir / str(v) for k, v in weight_map.items()}
    single = model_dir / BASE_SINGLE
    if single.is_file():
        header, _ = _safetensors_header(single)
        return {k: single for k in header if k != "__metadata__"}
    return None


def find_base(adapters: Sequence[Adapter], base: Path | None) -> tuple[Path | None, str]:
    """(base model dir, where it came from): `base`, else the first adapter's
    base_model_name_or_path that is a local model dir; (None, why not) without one."""
    if base is not None:
        if not Path(base).is_dir() or base_weight_files(base) is None:
            raise AnalysisError(f"--base {base}: not a model dir (no {BASE_SINGLE} or {BASE_INDEX})")
        return Path(base), "from --base"
    names = []
    for adapter in adapters:
        name = adapter.config.get("base_model_name_or_path")
        if isinstance(name, str) and name:
            names.append(name)
            if Path(name).is_dir() and base_weight_files(Path(name)) is not None:
                return Path(name), f"from base_model_name_or_path of {adapter.path / CONFIG_NAME}"
    why = (f"base_model_name_or_path ({', '.join(sorted(set(names)))}) is not a local model dir"
           if names else f"{CONFIG_NAME} names no base_model_name_or_path")
    return None, (f"no base model: {why}; the norms are absolute Frobenius norms, give --base DIR "
                  "for the relative change")


def base_norms(model_dir: Path, shapes: Mapping[str, tuple[int, int]]) -> dict[str, float]:
    """‖W0‖_F of every module in `shapes`, read one tensor at a time from the base model."""
    files = base_weight_files(model_dir) or {}
    by_file: dict[Path, list[str]] = {}
    for module in shapes:
        key = f"{module}.weight"
        if key not in files:
            raise AnalysisError(f"base model {model_dir} has no tensor {key} for module {module}; "
                                "is it the model the adapters were trained on?")
        by_file.setdefault(files[key], []).append(key)
    norms: dict[str, float] = {}
    for path, keys in by_file.items():
        for key, weight in iter_tensors(path, keys):
            module = key.removesuffix(".weight")
            out, inp = shapes[module]
            if weight.shape not in ((out, inp), (inp, out)):  # (in, out): Conv1D, fan_in_fan_out
                raise AnalysisError(f"base model {model_dir}: {key} is {tuple(weight.shape)} but "
                                    f"the adapters' update of {module} is {(out, inp)}")
            norms[module] = float(np.linalg.norm(weight.astype(np.float64)))
    return norms


# --- the math ------------------------------------------------------------------------------------


def product_norm(left: np.ndarray, right: np.ndarray) -> float:
    """‖left @ right‖_F for left [m, k], right [k, n] with small k, without the [m, n] product:
    with left = Q R (reduced QR, Q orthonormal), ‖left @ right‖_F = ‖R @ right‖_F."""
    k = left.shape[1]
    if k >= min(left.shape[0], right.shape[1]):
        return float(np.linalg.norm(left @ right))
    r = np.linalg.qr(left, mode="r")
    return float(np.linalg.norm(r @ right))


def module_change(a: LoraModule, b: LoraModule) -> float:
    """‖ΔW_b − ΔW_a‖_F = ‖[s_b B_b, −s_a B_a] @ [A_b; A_a]‖_F."""
    if a.scale == b.scale and np.array_equal(a.a, b.a) and np.array_equal(a.b, b.b):
        return 0.0  # exactly, rather than the QR's rounding
    left = np.concatenate([b.scale * b.b, -a.scale * a.b], axis=1)  # [out, r_b + r_a]
    right = np.concatenate([b.a, a.a], axis=0)  # [r_b + r_a, in]
    return product_norm(left, right)


def compare_adapters(a: Adapter, b: Adapter, base_norm: Mapping[str, float] | None = None,
                     ) -> list[ModuleChange]:
    """Per-module changes from `a` to `b`; the module sets and ΔW shapes must agree."""
    differ = sorted([(m, "A", "B") for m in set(a.modules) - set(b.modules)]
                    + [(m, "B", "A") for m in set(b.modules) - set(a.modules)])
    if differ:
        first, side, other = differ[0]
        more = f" ({len(differ) - 1} more differ)" if len(differ) > 1 else ""
        raise AnalysisError(f"the adapters adapt different modules: {first} is in {side} "
                            f"({a.path if side == 'A' else b.path}) but not in {other}{more}")
    rows = []
    for name, ma in a.modules.items():
        mb = b.modules[name]
        if ma.shape != mb.shape:
            raise AnalysisError(f"module {name} has shape {ma.shape} in A but {mb.shape} in B")
        rows.append(ModuleChange(
            module=name, shape=ma.shape, rank_a=ma.rank, rank_b=mb.rank,
            norm_a=ma.scale * product_norm(ma.b, ma.a), norm_b=mb.scale * product_norm(mb.b, mb.a),
            change=module_change(ma, mb),
            base_norm=None if base_norm is None else base_norm[name]))
    return rows


def weight_change(adapter_a: Path, adapter_b: Path, *, base: Path | None = None) -> WeightChange:
    """How far adapter B's weights are from adapter A's, per module and in total.

    `base`: the base model dir for relative changes (default: adapter_config.json's
    base_model_name_or_path when it is a local model dir; else norms stay absolute).
    Paths may be adapter dirs or run dirs (their `adapter/`)."""
    a, b = read_adapter(adapter_a), read_adapter(adapter_b)
    base_dir, source = find_base([a, b], base)
    norms = None
    if base_dir is not None:
        norms = base_norms(base_dir, {name: m.shape for name, m in a.modules.items()})
    return WeightChange(a.path, b.path, base_dir, source, compare_adapters(a, b, norms))


# --- rendering -----------------------------------------------------------------------------------


def render_weight_change(result: WeightChange, fmt: OutputFormat | str, *,
                         per_layer: bool = False) -> str | RenderableType:
    """The total (and with `per_layer` one row per module) as a table, md, csv or json."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.json:
        return json_text(result.to_dict(per_module=per_layer))
    n = len(result.modules)
    total = {"module": f"total ({n} module{'s' if n != 1 else ''})", "shape": None, "rank_a": None,
             "rank_b": None, "norm_a": result.norm_a, "norm_b": result.norm_b,
             "change": result.change, "base_norm": result.base_norm, "relative": result.relative}
    records = [total] + ([m.to_dict() for m in result.modules] if per_layer else [])
    if fmt is OutputFormat.csv:
        return csv_text([{**r, "module": "total" if r is total else r["module"]} for r in records])
    has_base = result.base is not None
    keys = ["norm_a", "norm_b", "change"] + (["base_norm", "relative"] if has_base else [])
    columns = ["module", "‖ΔW_A‖_F", "‖ΔW_B‖_F", "‖ΔW_B − ΔW_A‖_F"]
    columns += ["‖W0‖_F", "relative change"] if has_base else []
    cells = [[str(r["module"])] + [fmt_number(r[k]) for k in keys] for r in records]
    note = (f"relative change = ‖ΔW_B − ΔW_A‖_F / ‖W0‖_F; base: {result.base} ({result.base_source})"
            if has_base else result.base_source)
    if fmt is OutputFormat.md:
        return (f"## weight change B − A\n\nA = `{result.adapter_a}`  \nB = `{result.adapter_b}`\n\n"
                + markdown_table(columns, cells) + f"\n{note}\n")
    return rich_table(columns, cells, title="weight change B − A",
                      caption=f"A = {result.adapter_a}\nB = {result.adapter_b}\n{note}")
