"""Check a torch.export archive (.pt2) before torch reads it, so that loading it cannot run code from the file.

`torch.export.load` (torch 2.14.1) runs code stored in the file in several ways, none of which its
`weights_only` defaults prevent:

- sample inputs (`data/sample_inputs/<model>.pt`), legacy `data/weights/<model>.pt` and
  `data/constants/<model>.pt`, and the old format's `serialized_*.pt` go through
  `torch._export.serde.serialize.deserialize_torch_artifact`: `torch.load(weights_only=True)`, and on any
  error `torch.load(weights_only=False)`;
- weights and tensor constants whose payload config says `use_pickle` are read with
  `torch.load(weights_only=False)` directly (`torch/export/pt2_archive/_package.py`);
- constants named `opaque_obj_*` go through plain `pickle.loads`, `custom_obj_*` through TorchScript's
  unpickler (`torch._C._pickle_load_obj`);
- anything under `data/aotinductor/` goes to the AOTInductor loader, which loads compiled native code;
- in the program's JSON, every `expr_str` goes through `sympy.sympify`, which is `eval`, and a pytree
  context's `__enum__` / `default_factory_module` names a module that `importlib.import_module` imports;
- `ExportedProgram.module()` exec()s the program's `guards_code` strings: edgekit.modelio asks for
  `module(check_guards=False)`, so nothing here checks them.

`check_pt2` finds each of these without executing anything from the file: pickles are probed with
`torch.load(weights_only=True)` from memory (torch's own safe unpickler, the same parser torch then uses),
expressions are parsed with `ast` against an arithmetic-only grammar. `refuse_unsafe_loads` additionally
stops torch from unpickling unsafely while it loads, in case the two readings of the zip ever differ.
"""

from __future__ import annotations

import ast
import enum
import inspect
import io
import json
import os
import pickle
import re
import sys
import types
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekit.errors import InputError, first_line

# The layout of torch 2.14.1's archives (torch/csrc/export/pt2_archive_constants.h): names are relative to
# the archive's root folder, which PyTorchFileReader takes from the first entry's first path component.
_MODELS_PREFIX, _MODELS_SUFFIX = "models/", ".json"
_SAMPLE_INPUTS = "data/sample_inputs/{}.pt"
_WEIGHTS_DIR, _CONSTANTS_DIR = "data/weights/", "data/constants/"
_WEIGHTS_CONFIG, _CONSTANTS_CONFIG = "data/weights/{}_weights_config.json", "data/constants/{}_constants_config.json"
_TENSOR_PREFIX, _CUSTOM_OBJ_PREFIX, _OPAQUE_OBJ_PREFIX = "tensor_", "custom_obj_", "opaque_obj_"
_AOTI_DIR = "data/aotinductor/"
# The pre-2.8 format torch.export.load still falls back to: entries at the zip's top level. Its state dict and
# constants go to torch.load whether they are named .pt or .json.
_OLD_PICKLES = (
    "serialized_state_dict.pt",
    "serialized_constants.pt",
    "serialized_example_inputs.pt",
    "serialized_state_dict.json",
    "serialized_constants.json",
)
_OLD_PROGRAM = "serialized_exported_program.json"

HINT_TRUST = (
    "if you trust the file, pass --allow-pickle; better, re-save it with torch.export.save from a current torch"
)
_HINT_SAVE = "save it with torch.export.save(torch.export.export(model, args), path)"
# torch's zip reader (miniz) looks names up ignoring ASCII case only.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# Shape expressions torch writes are sympy srepr over symbols like s0, u1, zuf0: Add(Mul(Integer(2),
# Symbol('s0', positive=True, integer=True)), FloorDiv(...)). sympify evals them, and sympy constructors sympify
# string arguments, so strings are allowed only as the name of a Symbol or the digits of a number.
_EXPR_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.keyword, ast.Name, ast.Constant,
    ast.Tuple, ast.Load, ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)  # fmt: skip
_SYMBOL = re.compile(r"[a-z][a-z0-9_]*[0-9]")  # torch's prefixes (s, u, zf, zuf, r0_, ...) and an index
_FUNCTION = re.compile(r"[A-Z][A-Za-z0-9]*(_[A-Za-z0-9]+)*")
_LOWERCASE_NAMES = frozenset({"oo", "zoo", "nan", "int_oo", "true", "false", "pi", "floor", "ceiling", "sqrt"})
_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
# function -> (what its first argument may spell when it is a string, the type its keyword values must have)
_STRING_ARGUMENTS: dict[str, tuple[re.Pattern[str], type]] = {
    "Symbol": (_SYMBOL, bool),  # Symbol('s0', positive=True, integer=True)
    "Float": (re.compile(rf"{_NUMBER}|[-+]?inf|nan"), int),  # Float('1.5', precision=53)
    "Integer": (re.compile(r"[-+]?\d+"), int),
    "Rational": (re.compile(r"[-+]?\d+(/\d+)?"), int),
}
_MAX_EXPR_CHARS = 10_000

_Reader = Callable[[str], bytes | None]  # reads an entry by the name torch looks up, or None


def check_pt2(path: Path) -> None:
    """Raise InputError unless torch.export.load can read `path` without running code stored in it.

    Args:
        path: A `.pt2` file written by `torch.export.save`.

    Raises:
        InputError: the file is not a readable zip, has an unsafe entry name, or holds an entry whose loading
            would unpickle arbitrary objects, load native code, evaluate Python or import a module.
    """
    label = path.name
    try:
        if not zipfile.is_zipfile(path):
            raise InputError(
                f"'{label}' is not a readable torch.export file (not a zip archive: corrupt or wrong type)",
                hint=_HINT_SAVE,
            )
        with zipfile.ZipFile(path) as archive:
            _check_archive(archive, label)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise InputError(f"'{label}' is a damaged zip archive ({first_line(exc)})", hint=_HINT_SAVE) from None


@contextmanager
def refuse_unsafe_loads() -> Iterator[None]:
    """Within the block, make torch.export.load's pickle paths safe or failing; restore everything after.

    Sets TORCH_FORCE_WEIGHTS_ONLY_LOAD, which torch.load reads at call time and which overrides even an
    explicit `weights_only=False`, so deserialize_torch_artifact's fallback and pickle-format weights get the
    weights_only unpickler. The paths that bypass torch.load (plain pickle.loads for opaque objects,
    TorchScript's unpickler for custom objects, the AOTInductor loader) are replaced by functions that raise.
    The environment and torch's module attributes are process-wide: do not load models in other threads
    meanwhile.
    """
    import torch
    import torch.export.pt2_archive._package as package

    saved_env = {
        name: os.environ.get(name) for name in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    }
    safe_pickle = types.ModuleType("pickle")
    safe_pickle.__dict__.update(vars(pickle))
    safe_pickle.loads = safe_pickle.load = _refuse  # type: ignore[attr-defined]
    patches = [
        (package, "pickle", safe_pickle),
        (package, "_load_aoti", _refuse),
        (torch._C, "_pickle_load_obj", _refuse),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches if hasattr(owner, name)]
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # both set makes torch.load raise
    try:
        for owner, name, value in patches:
            if hasattr(owner, name):  # a later torch may move these; check_pt2 still guards them
                setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise pickle.UnpicklingError("edgekit refuses to unpickle or load native code from a model file")


def _check_archive(archive: zipfile.ZipFile, label: str) -> None:
    infos = archive.infolist()
    if not infos:
        raise InputError(f"'{label}' is an empty zip archive, not a torch.export file", hint=_HINT_SAVE)
    names = [_torch_name(info, label) for info in infos]
    by_key: dict[str, zipfile.ZipInfo] = {}
    for name, info in zip(names, infos, strict=True):
        key = name.translate(_ASCII_LOWER)
        if key in by_key:
            raise InputError(
                f"'{label}' has two entries named '{name}' (torch reads zip names ignoring case)", hint=_HINT_SAVE
            )
        by_key[key] = info

    def read(name: str) -> bytes | None:
        info = by_key.get(name.translate(_ASCII_LOWER))
        return None if info is None else archive.read(info)

    _check_old_format(names, read, label)
    # PyTorchFileReader's root is the first entry's folder; entries outside it make torch use the old format,
    # but checking them as if they were read is the safe side.
    root = names[0].split("/", 1)[0] + "/"
    records = [name[len(root) :] for name in names if name.startswith(root)]
    for record in records:
        if record.startswith(_AOTI_DIR):
            raise InputError(
                f"'{label}' entry '{root}{record}' is AOTInductor native code, which torch.export.load would load",
                hint=HINT_TRUST,
            )
    for record in records:
        if record.startswith(_MODELS_PREFIX):
            # torch takes the model name by slicing, whatever the suffix is.
            model = record[len(_MODELS_PREFIX) : -len(_MODELS_SUFFIX)]
            _check_program(read(root + record), f"{root}{record}", label)
            _check_model_payloads(model, set(records), lambda name: read(root + name), root, label)


def _torch_name(info: zipfile.ZipInfo, label: str) -> str:
    """Return the entry name as torch's reader sees it (raw bytes as UTF-8), rejecting unsafe names."""
    name = info.orig_filename
    if not info.flag_bits & 0x800:  # zipfile decoded the raw bytes as cp437; torch uses them as they are
        try:
            name = name.encode("cp437").decode("utf-8")
        except UnicodeError:
            raise InputError(f"'{label}' has an entry name that is not UTF-8", hint=_HINT_SAVE) from None
    parts = name.replace("\\", "/").split("/")
    if "\0" in name or name.startswith(("/", "\\")) or ".." in parts or re.match(r"[A-Za-z]:", name):
        raise InputError(
            f"'{label}' has an unsafe entry name '{name}' (an absolute path or '..')",
            hint="a file written by torch.export.save has none; do not load this one",
        )
    return name


def _check_old_format(names: list[str], read: _Reader, label: str) -> None:
    """Check the top-level entries of the pre-2.8 format, which torch.export.load falls back to."""
    if "version" not in names:
        return
    for name in _OLD_PICKLES:
        if name in names:
            _check_torch_pickle(read(name), name, label, empty_ok=True)
    if _OLD_PROGRAM in names:
        _check_program(read(_OLD_PROGRAM), _OLD_PROGRAM, label)


def _check_model_payloads(model: str, records: set[str], read: _Reader, root: str, label: str) -> None:
    """Check what torch unpickles for one model: sample inputs, weights and constants."""
    sample_inputs = _SAMPLE_INPUTS.format(model)
    _check_torch_pickle(read(sample_inputs), root + sample_inputs, label, empty_ok=True)
    for folder, config_format in ((_WEIGHTS_DIR, _WEIGHTS_CONFIG), (_CONSTANTS_DIR, _CONSTANTS_CONFIG)):
        legacy = f"{folder}{model}.pt"
        if legacy in records:  # torch reads the legacy file instead of the config
            _check_torch_pickle(read(legacy), root + legacy, label, empty_ok=True)
            continue
        config_name = config_format.format(model)
        if config_name not in records:
            continue
        try:
            config = json.loads(read(config_name) or b"")["config"]
            payloads = [(str(meta["path_name"]), bool(meta["use_pickle"])) for meta in config.values()]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(f"'{label}' entry '{root}{config_name}' is not a valid payload config") from None
        for path_name, use_pickle in payloads:
            entry = os.path.join(folder, path_name)  # as torch joins it
            if folder == _CONSTANTS_DIR and path_name.startswith((_CUSTOM_OBJ_PREFIX, _OPAQUE_OBJ_PREFIX)):
                raise InputError(
                    f"'{label}' entry '{root}{entry}' is a pickled custom object; loading it would run code stored"
                    " in the file",
                    hint=HINT_TRUST,
                )
            if use_pickle and (folder == _WEIGHTS_DIR or path_name.startswith(_TENSOR_PREFIX)):
                _check_torch_pickle(read(entry), root + entry, label, empty_ok=False)


def _check_torch_pickle(data: bytes | None, entry: str, label: str, *, empty_ok: bool) -> None:
    """Probe `data` with torch's weights_only unpickler; torch would fall back to full pickle if it fails."""
    if data is None or (empty_ok and not data):
        return  # a missing entry fails torch's own load; an empty artifact is not unpickled
    import torch

    try:
        # weights_only=True cannot be turned off by TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD when passed explicitly.
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True, mmap=False)
    except Exception as exc:  # any failure at all is what sends torch to weights_only=False
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        reason = f"it refers to {found.group(1)}" if found else first_line(exc, 120)
        raise InputError(
            f"'{label}' entry '{entry}' needs pickle to load, which would run code stored in the file ({reason})",
            hint=HINT_TRUST,
        ) from None


def _check_program(data: bytes | None, entry: str, label: str) -> None:
    """Check the strings in a serialized program that torch evaluates or imports from."""
    if data is None:
        return
    try:
        program = json.loads(data.decode("utf-8"))
    except (UnicodeError, ValueError):
        raise InputError(f"'{label}' entry '{entry}' is not valid JSON", hint=_HINT_SAVE) from None
    problem = next(_json_problems(program, depth=0), None)
    if problem is not None:
        raise InputError(f"'{label}' entry '{entry}' {problem}", hint=HINT_TRUST)


def _json_problems(value: Any, depth: int) -> Iterator[str]:
    """Yield what torch would evaluate or import in `value`, descending into JSON held in strings (treespecs)."""
    if isinstance(value, dict):
        if "expr_str" in value and not _is_safe_expr(value["expr_str"]):
            yield f"has a shape expression torch would evaluate as Python: {str(value['expr_str'])[:80]!r}"
        if "__enum__" in value and not _is_imported(value.get("fqn"), enum_only=True):
            yield f"names {str(value.get('fqn'))[:80]!r} for torch to import as an enum"
        if "default_factory_module" in value:
            fqn = f"{value.get('default_factory_module')}:{value.get('default_factory_name')}"
            if not _is_imported(fqn, enum_only=False):
                yield f"names {fqn[:80]!r} for torch to import as a defaultdict factory"
        for item in value.values():
            yield from _json_problems(item, depth)
    elif isinstance(value, list):
        for item in value:
            yield from _json_problems(item, depth)
    elif isinstance(value, str) and depth < 4 and value.lstrip()[:1] in ("[", "{"):
        try:
            nested = json.loads(value)
        except ValueError:
            return  # not JSON, so torch does not parse it either
        yield from _json_problems(nested, depth + 1)


def _is_safe_expr(expr: Any) -> bool:
    """Return whether sympy.sympify(expr) only builds numbers, symbols and functions of them: nothing to eval."""
    if not isinstance(expr, str) or len(expr) > _MAX_EXPR_CHARS:
        return False
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return False  # sympy's parser accepts a superset of Python; refuse what Python's does not
    allowed_strings: set[int] = set()  # ids of the string constants that spell a symbol name or a number
    for node in ast.walk(tree):
        if not isinstance(node, _EXPR_NODES):
            return False
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                return False
            pattern, keyword_type = _STRING_ARGUMENTS.get(node.func.id, (None, None))
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                if pattern is None or not pattern.fullmatch(first.value):
                    return False
                allowed_strings.add(id(first))
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg is None or not isinstance(value, ast.Constant) or type(value.value) is not keyword_type:
                    return False
        elif isinstance(node, ast.Constant):
            if type(node.value) not in (int, float, bool) and id(node) not in allowed_strings:
                return False
        elif isinstance(node, ast.Name) and not (
            _SYMBOL.fullmatch(node.id) or _FUNCTION.fullmatch(node.id) or node.id in _LOWERCASE_NAMES
        ):
            return False
    return True


def _is_imported(fqn: Any, *, enum_only: bool) -> bool:
    """Return whether `module:qualname` resolves, without importing or running code, to an enum or a class."""
    if not isinstance(fqn, str) or ":" not in fqn:
        return False
    module_name, _, qualname = fqn.partition(":")
    target: Any = sys.modules.get(module_name)  # importing an already imported module runs nothing
    if target is None:
        return False
    for attr in qualname.split("."):
        try:
            target = inspect.getattr_static(target, attr)
        except AttributeError:
            return False
    if not isinstance(target, type):
        return False
    return issubclass(target, enum.Enum) if enum_only else True
