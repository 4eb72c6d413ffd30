"""User code named in a config: `'package.module:function'` or `'path/to/file.py:function'`.

Four config keys take such a reference: `data.task` (a task factory), `data.reward` (a reward
function), `algorithm.advantage_mode` (an advantage function) and `algorithm.transform_mode` (a
token transform). Two ways to check one:

- `locate_plugin` (config show, campaign plan): no user code runs. The module's source file is
  found with the import machinery's finders (parents' `__init__.py` are not executed) and parsed
  with `ast`: the function must be defined at the module's top level and accept the arguments
  retrain will pass. Standard-library modules are not user code; they are imported and checked
  like the next case. What cannot be seen statically (a name bound by `import *` or a module
  `__getattr__`, an extension module) is accepted here and checked when the run imports it.
- `load_plugin` + `check_arity` (config validate, and every run): the module is imported (its
  top-level code runs) and the callable's signature is checked.

Errors name the config key they came from. `discover_plugins` (the `retrain plugins` command)
finds plugin files in a directory, also without running them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrain.errors import DataError

ADVANTAGE_ARITY = (1,)  # an advantage function is called as fn(rewards_G)
TRANSFORM_ARITY = (2,)  # a token transform is called as fn(adv_T, batch)
TRANSFORM_KEY = "algorithm.transform_mode"


def plugin_references(cfg: Any) -> list[tuple[str, str]]:
    """(config key, reference) of every plugin a RetrainConfig names."""
    refs = [("data.task", cfg.data.task), ("data.reward", cfg.data.reward),
            ("algorithm.advantage_mode", cfg.algorithm.advantage_mode),
            (TRANSFORM_KEY, cfg.algorithm.transform_mode)]
    return [(key, ref) for key, ref in refs if ref and is_plugin_path(ref)]


def is_plugin_path(spec: str) -> bool:
    """Whether `spec` has the 'module:attribute' shape of a plugin reference."""
    module, sep, attr = spec.partition(":")
    return bool(sep and module and attr)


def _split(spec: str, key: str) -> tuple[str, str]:
    if not is_plugin_path(spec):
        raise DataError(f"{key}: expected 'package.module:function', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    return module_name, attr


def load_plugin(spec: str, key: str) -> Callable[..., Any]:
    """Import 'module:attr' (or 'file.py:attr') and return the callable; DataError otherwise."""
    module_name, attr = _split(spec, key)
    try:
        if module_name.endswith(".py"):
            module = _module_from_file(Path(module_name), key)
        else:
            module = importlib.import_module(module_name)
    except DataError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise DataError(_not_found(key, exc.name)) from None
        raise DataError(f"{key}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # any import-time failure of user code is the user's to fix
        raise DataError(f"{key}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DataError(f"{key}: {module_name!r} defines no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DataError(f"{key}: {spec!r} is not callable")
    return obj


def check_arity(fn: Callable[..., Any], spec: str, key: str, arities: tuple[int, ...]) -> None:
    """DataError unless `fn` can be called with one of `arities` positional arguments."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # some builtins have no signature; the call will tell
    for n in arities:
        try:
            sig.bind(*range(n))
            return
        except TypeError:
            continue
    raise DataError(f"{key}: {spec!r} must accept {_arity_words(arities)}; its signature is "
                    f"{spec.partition(':')[2]}{sig}")


def _arity_words(arities: tuple[int, ...]) -> str:
    words = [f"{n} positional argument{'s' if n != 1 else ''}" for n in arities]
    return " or ".join(words)


def _module_from_file(path: Path, key: str) -> Any:
    if not path.is_file():
        raise DataError(f"{key}: no such file {str(path)!r}")
    name = f"retrain_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DataError(f"{key}: cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_plugin(spec: str, key: str, *, arities: tuple[int, ...], run_code: bool) -> list[str]:
    """The problems of a plugin reference, for config-load reporting. `run_code`: import the
    module (validate, run); otherwise only `locate_plugin` (show, plan)."""
    try:
        if run_code:
            check_arity(load_plugin(spec, key), spec, key, arities)
        else:
            locate_plugin(spec, key, arities=arities)
    except DataError as exc:
        return [str(exc)]
    return []


def load_custom_transform(spec: str) -> Callable[..., Any]:
    """Import a token transform and try it on a small batch; DataError naming the key otherwise.

    The trial catches a wrong signature or output before the model loads; the pipeline checks
    every real call again (shape [T], finite)."""
    import numpy as np

    from retrain.algo.pipeline import TokenBatch

    fn = load_plugin(spec, TRANSFORM_KEY)
    check_arity(fn, spec, TRANSFORM_KEY, TRANSFORM_ARITY)
    # two completions of one group, 3 and 2 tokens, the second token a planning token
    batch = TokenBatch(logprob_T=np.array([-0.1, -2.0, -0.5, -1.0, -0.3]), entropy_T=None,
                       planning_T=np.array([False, True, False, False, False]),
                       offsets=np.array([0, 3, 5]), reward_N=np.array([1.0, 0.0]),
                       group_N=np.array([0, 0]))
    adv_T = np.array([1.0, 1.0, 1.0, -1.0, -1.0])
    try:
        out = np.asarray(fn(adv_T.copy(), batch), dtype=np.float64)
    except Exception as exc:  # any failure of user code is a config error
        raise DataError(f"{TRANSFORM_KEY}: {spec!r} failed on a sample batch (adv_T "
                        f"{adv_T.tolist()}): {type(exc).__name__}: {exc}") from None
    if out.shape != adv_T.shape or not np.all(np.isfinite(out)):
        raise DataError(f"{TRANSFORM_KEY}: {spec!r} must return one finite float per token; on "
                        f"a sample batch of {adv_T.shape[0]} tokens it returned {out.tolist()}")
    return fn


def transform_problems(spec: str, *, plugins: str) -> list[str]:
    """Problems of a plugin `transform_mode` (none for a built-in mode); `plugins` as in
    `config.load.plugin_problems`: import, locate or skip."""
    if not is_plugin_path(spec) or plugins == "skip":
        return []
    if plugins == "locate":
        return check_plugin(spec, TRANSFORM_KEY, arities=TRANSFORM_ARITY, run_code=False)
    try:
        load_custom_transform(spec)
    except DataError as exc:
        return [str(exc)]
    return []


# --- static check: no user code runs ----------------------------------------------------------

def locate_plugin(spec: str, key: str, *, arities: tuple[int, ...]) -> None:
    """Check a plugin reference without executing user code (see the module docstring)."""
    module_name, attr = _split(spec, key)
    top = module_name.partition(".")[0]
    if not module_name.endswith(".py") and (module_name in sys.modules or _is_stdlib(top)):
        check_arity(load_plugin(spec, key), spec, key, arities)  # no user code: already loaded or stdlib
        return
    source = _module_source(module_name, key)
    if source is None:
        return  # an extension module or a namespace: only importing can check it
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (SyntaxError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{key}: cannot read {str(source)!r}: {type(exc).__name__}: {exc}") from None
    name = attr.partition(".")[0]
    found = _top_level_binding(tree, name)
    if found is None:
        if _has_dynamic_names(tree):
            return
        raise DataError(f"{key}: {module_name!r} ({source}) defines no {name!r}")
    if isinstance(found, ast.FunctionDef | ast.AsyncFunctionDef) and "." not in attr:
        _check_def_arity(found, spec, key, arities)


def _not_found(key: str, name: str) -> str:
    return (f"{key}: cannot find module {name!r} (is it installed, or on PYTHONPATH? a file can "
            f"be given as 'path/to/file.py:function')")


def _is_stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def _module_source(module_name: str, key: str) -> Path | None:
    """The .py file of a module, found without importing it or its parents."""
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise DataError(f"{key}: no such file {module_name!r}")
        return path
    parts = module_name.split(".")
    search: list[str] | None = None  # sys.path for the top-level package
    spec = None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            raise DataError(_not_found(key, name))
        locations = spec.submodule_search_locations
        if i < len(parts) - 1:
            if locations is None:
                raise DataError(f"{key}: {name!r} is a module, not a package, so it has no "
                                f"submodule {parts[i + 1]!r}")
            search = list(locations)
    assert spec is not None
    origin = spec.origin
    if origin is None or not origin.endswith(".py"):
        return None
    return Path(origin)


def _top_level_binding(tree: ast.Module, name: str) -> ast.AST | None:
    """The last top-level statement that binds `name` (def, class, assignment, import)."""
    found: ast.AST | None = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                found = node
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found = node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any((a.asname or a.name.partition(".")[0]) == name for a in node.names):
                found = node
        elif isinstance(node, ast.If | ast.Try):
            found = found or _nested_binding(node, name)
    return found


def _nested_binding(node: ast.AST, name: str) -> ast.AST | None:
    """A binding of `name` inside a top-level if/try (e.g. `try: import x except: ...`)."""
    for child in ast.walk(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and child.name == name:
            return child
        if isinstance(child, ast.Name) and child.id == name and isinstance(child.ctx, ast.Store):
            return child
        if isinstance(child, ast.alias) and (child.asname or child.name.partition(".")[0]) == name:
            return child
    return None


def _has_dynamic_names(tree: ast.Module) -> bool:
    """`from x import *`, a module `__getattr__` or `globals()[...] = ...` can bind any name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return True
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "globals":
            return True
    return False


def _check_def_arity(fn: ast.FunctionDef | ast.AsyncFunctionDef, spec: str, key: str,
                     arities: tuple[int, ...]) -> None:
    a = fn.args
    positional = len(a.posonlyargs) + len(a.args)
    required = positional - len(a.defaults)
    required_kwonly = sum(d is None for d in a.kw_defaults)
    for n in arities:
        if required <= n and (n <= positional or a.vararg is not None) and not required_kwonly:
            return
    shown = ", ".join(x.arg for x in [*a.posonlyargs, *a.args])
    raise DataError(f"{key}: {spec!r} must accept {_arity_words(arities)}; it is defined as "
                    f"{fn.name}({shown}) at line {fn.lineno}")


# --- discovery: plugin files in a directory, found without running them --------------------

# kind → (config key that takes the reference, arities the function must accept)
PLUGIN_KEYS: dict[str, tuple[str, tuple[int, ...]]] = {
    "task": ("data.task", (0, 2)),  # as tasks.registry TASK_ARITY / REWARD_ARITY (it imports us)
    "reward": ("data.reward", (3,)),
    "advantage": ("algorithm.advantage_mode", ADVANTAGE_ARITY),
    "transform": (TRANSFORM_KEY, TRANSFORM_ARITY),
    "hook": ("hooks.names", (0, 1)),  # a hook factory: factory() or factory(cfg) (docs/hooks.md)
}
KIND_MARKER = "RETRAIN_PLUGIN_KIND"  # module-level string in files `retrain init plugin` writes


@dataclass(frozen=True)
class FoundPlugin:
    """A top-level function of a plugin file (a file that declares `RETRAIN_PLUGIN_KIND`)."""

    path: Path  # the file, as it would be named in a config (relative to the cwd if under it)
    kind: str  # a key of PLUGIN_KEYS
    function: str
    line: int
    doc: str  # first line of the module docstring, or ""

    @property
    def reference(self) -> str:
        return f"{self.path.as_posix()}:{self.function}"

    @property
    def config_line(self) -> str:
        ref = f'"{self.reference}"'
        return f"{PLUGIN_KEYS[self.kind][0]} = {f'[{ref}]' if self.kind == 'hook' else ref}"


def discover_plugins(directory: Path, *, cwd: Path | None = None) -> tuple[list[FoundPlugin], list[str]]:
    """Plugin functions of the *.py files directly in `directory` (parsed, never imported),
    and a note per file that declares a kind but cannot be used (unreadable, bad kind, no
    function that takes the kind's arguments)."""
    found: list[FoundPlugin] = []
    notes: list[str] = []
    base = (cwd or Path.cwd()).resolve()
    for path in sorted(Path(directory).glob("*.py")):
        shown = path.resolve().relative_to(base) if path.resolve().is_relative_to(base) else path
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, OSError) as exc:
            if KIND_MARKER in _safe_read(path):
                notes.append(f"{shown}: cannot parse it ({type(exc).__name__}: {exc})")
            continue
        kind = _declared_kind(tree)
        if kind is None:
            continue
        if kind not in PLUGIN_KEYS:
            notes.append(f"{shown}: {KIND_MARKER} = {kind!r} is not one of {', '.join(PLUGIN_KEYS)}")
            continue
        doc = (ast.get_docstring(tree) or "").strip().splitlines()
        fns = [node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
               and not node.name.startswith("_") and _fits(node, kind)]
        if not fns:
            notes.append(f"{shown}: declares a {kind} plugin but defines no top-level function "
                         f"that takes {_arity_words(PLUGIN_KEYS[kind][1])}")
        found += [FoundPlugin(shown, kind, fn.name, fn.lineno, doc[0] if doc else "") for fn in fns]
    return found, notes


def _safe_read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _declared_kind(tree: ast.Module) -> str | None:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == KIND_MARKER
                                                 for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    return None


def _fits(fn: ast.FunctionDef | ast.AsyncFunctionDef, kind: str) -> bool:
    try:
        _check_def_arity(fn, fn.name, kind, PLUGIN_KEYS[kind][1])
    except DataError:
        return False
    return True
