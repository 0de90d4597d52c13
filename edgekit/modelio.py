"""Load the user's model safely, and run a torch model over numpy batches.

Formats: a `.pt2` file (torch.export.save), a TorchScript archive (torch.jit.save), a
`package.module:factory` or `path/to/file.py:factory` spec (optionally with `--weights` holding a
state dict, loaded with weights_only=True), and a pickled whole module only with an explicit opt-in,
because unpickling runs arbitrary code. A `.pt2` is checked by `edgekit.pt2_archive` before torch reads
it, since torch.export.load falls back to unrestricted pickle.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import pt2_archive
from edgekit.errors import InputError
from edgekit.hashing import sha256_of
from edgekit.signature import SINGLE_INPUT, input_names

MAX_DYNAMIC = 4096  # upper bound for a dynamic axis exported without one (ExecuTorch plans memory for it)
MODEL_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".torchscript", ".jit")
_DTYPES = {"float32": np.float32, "int64": np.int64, "int32": np.int32}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedModel:
    module: Any  # torch.nn.Module in eval mode
    example_inputs: dict[str, np.ndarray] | None  # named, in forward() order; None when nothing says the shapes
    dynamic: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)  # .pt2: name -> axis -> range
    facts: dict[str, Any] = field(default_factory=dict)  # format, path or spec, sha256 (see load_model)


def load_model(
    spec: str,
    *,
    weights: Path | None = None,
    allow_pickle: bool = False,
    input_shape: tuple[int, ...] = (),
    input_dtype: str = "float32",
    factory_args: dict[str, Any] | None = None,
    strip_prefix: str = "",
) -> LoadedModel:
    """Load `spec` and find an example input; raise InputError with a fix for anything unusable.

    Args:
        spec: A model file, or `package.module:factory` / `path/to/file.py:factory`.
        weights: A state dict for a factory spec, loaded with weights_only=True.
        allow_pickle: Trust the file: load a pickled module, and let torch.export.load unpickle a `.pt2`'s
            entries without edgekit's checks.
        input_shape: The input shape, for models that do not carry an example input.
        input_dtype: The input dtype name, with `input_shape`.
        factory_args: Keyword arguments for a factory (`--factory-args '{"num_class": 97}'`).
        strip_prefix: A prefix to strip from every weight name (`module.` for DataParallel checkpoints).

    Returns:
        The module in eval mode, an example input, and facts for the manifest: `sha256` of the file; for a
        factory, `source_sha256` (the .py file or the module's `__file__`), `weights_sha256`, and `sha256`
        covering both.
    """

    path = Path(spec)
    if path.suffix in MODEL_SUFFIXES or path.exists():
        if not path.is_file():
            raise InputError(f"model file '{spec}' does not exist")
        if weights is not None:
            raise InputError("--weights goes with a MODULE:FACTORY model spec, not a model file")
        if path.suffix not in MODEL_SUFFIXES:
            raise InputError(
                f"'{path.name}' is not a model file edgekit reads",
                hint=f"give one of {', '.join(MODEL_SUFFIXES)} or MODULE:FACTORY",
            )
        facts = {"path": str(path), "sha256": sha256_of(path)}
        if path.suffix == ".pt2":
            module, examples, dynamic = _load_exported(path, allow_pickle)
            return LoadedModel(
                module=module, example_inputs=examples, dynamic=dynamic, facts={**facts, "format": "torch.export"}
            )
        module, fmt = _load_torch_file(path, allow_pickle)
    elif ":" in spec:
        module, source = _load_factory(spec, weights, factory_args or {}, strip_prefix)
        fmt, facts = "factory", _factory_facts(spec, source, weights)
    else:
        raise InputError(
            f"model '{spec}' is neither a file nor a MODULE:FACTORY spec",
            hint="e.g. model.pt2, or my_package.models:build",
        )
    module = eval_mode(module)
    return LoadedModel(
        module=module, example_inputs=_example_inputs(module, input_shape, input_dtype), facts={**facts, "format": fmt}
    )


def eval_mode(module: Any) -> Any:
    """Put a module in eval mode; an exported GraphModule is already traced in the mode it was saved."""
    try:
        module.eval()
    except NotImplementedError:  # torch.export GraphModules refuse .eval()
        pass
    return module


def run_torch(module: Any, inputs: np.ndarray, batch: int = 1) -> np.ndarray:
    """Run `module` over `inputs` in batches of `batch` and return the first output as float32."""
    import torch

    outputs = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            out = module(torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch])))
            out = out[0] if isinstance(out, tuple | list) else out
            outputs.append(out.detach().float().numpy())
    return np.concatenate(outputs)


def _load_exported(
    path: Path, allow_pickle: bool
) -> tuple[Any, dict[str, np.ndarray], dict[str, dict[int, tuple[int, int]]]]:
    import logging
    import pickle
    from contextlib import nullcontext

    import torch

    hint = "save it with torch.export.save(torch.export.export(model, args), path)"
    if not allow_pickle:
        pt2_archive.check_pt2(path)
    elif not zipfile.is_zipfile(path):
        raise InputError(
            f"'{path.name}' is not a readable torch.export file (not a zip archive: corrupt or wrong type)", hint=hint
        )
    torch_export_log = logging.getLogger("torch.export")
    level = torch_export_log.level
    torch_export_log.setLevel(logging.ERROR)  # it logs a whole traceback before its own fallback
    try:
        # Defence in depth: check_pt2 reads the zip with Python's zipfile, torch with miniz.
        with nullcontext() if allow_pickle else pt2_archive.refuse_unsafe_loads():
            program = torch.export.load(str(path))
    except pickle.UnpicklingError:
        # refuse_unsafe_loads stopped an unpickling that check_pt2 did not see coming.
        raise InputError(
            f"'{path.name}' needs pickle to load, which would run code stored in the file", hint=pt2_archive.HINT_TRUST
        ) from None
    except Exception as exc:
        raise InputError(
            f"'{path.name}' is not a readable torch.export file ({type(exc).__name__})", hint=hint
        ) from None
    finally:
        torch_export_log.setLevel(level)
    args: tuple[Any, ...] = program.example_inputs[0] if program.example_inputs else ()
    kwargs: dict[str, Any] = program.example_inputs[1] if program.example_inputs else {}
    if not args or kwargs or not all(isinstance(a, torch.Tensor) for a in args):
        raise InputError(
            f"'{path.name}' was exported with {len(args)} positional and {len(kwargs)} keyword inputs; edgekit "
            "needs every input as a positional tensor",
            hint="export with torch.export.export(model, (x, y, ...)) and bind constants in forward()",
        )
    # check_guards=False: with guards on, torch 2.14.1 exec()s the program's `guards_code` strings from the file
    # (torch/export/_unlift.py, _convert_guards_code_to_fn); a forward pre-hook checks the inputs instead.
    module = program.module(check_guards=False)
    names = input_names(module, len(args), program)
    examples = {name: a.detach().numpy() for name, a in zip(names, args, strict=True)}
    return module, examples, _exported_ranges(program, names)


def _exported_ranges(program: Any, names: list[str]) -> dict[str, dict[int, tuple[int, int]]]:
    """Return the axes the program was exported with as dynamic, and their ranges (upper bound capped)."""
    import torch
    from torch.export.graph_signature import InputKind

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    specs = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    found: dict[str, dict[int, tuple[int, int]]] = {}
    for name, spec in zip(names, specs, strict=False):
        value = placeholders[spec.arg.name].meta.get("val")
        for axis, size in enumerate(getattr(value, "shape", ())):
            if isinstance(size, torch.SymInt):
                bounds = program.range_constraints.get(size.node.expr)
                low = int(bounds.lower) if bounds is not None else 1
                high = int(bounds.upper) if bounds is not None and bounds.upper.is_finite else MAX_DYNAMIC
                found.setdefault(name, {})[axis] = (max(low, 1), min(high, MAX_DYNAMIC))
    return found


def _load_torch_file(path: Path, allow_pickle: bool) -> tuple[Any, str]:
    import pickle

    import torch

    if not zipfile.is_zipfile(path):
        raise InputError(
            f"'{path.name}' is not a PyTorch archive (corrupt or wrong file type)",
            hint="save with torch.export.save, torch.jit.save or torch.save",
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        try:
            return torch.jit.load(str(path), map_location="cpu"), "torchscript"
        except Exception as exc:
            raise InputError(f"'{path.name}' is a damaged TorchScript archive ({type(exc).__name__})") from None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        content = None  # not plain tensors: a pickled module, handled below
    except Exception as exc:
        raise InputError(f"'{path.name}' cannot be read ({type(exc).__name__}: {exc})") from None
    if isinstance(content, dict):
        raise InputError(
            f"'{path.name}' holds a state dict, not a model",
            hint=f"pass the model's factory: edgekit build MODULE:FACTORY --weights {path.name}",
        )
    if content is not None:  # read safely, yet neither a state dict nor a module: a tensor, a list, a number
        raise InputError(
            f"'{path.name}' holds a {type(content).__name__}, not a model",
            hint="save the model with torch.export.save (a .pt2), or pass MODULE:FACTORY --weights for a state dict",
        )
    if not allow_pickle:
        raise InputError(
            f"'{path.name}' is a pickled module; loading it would execute code stored in the file",
            hint=(
                "if you trust it, pass --allow-pickle; better, save a safe format: "
                "torch.export.save(torch.export.export(model, args), 'model.pt2')"
            ),
        )
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(
            f"'{path.name}' failed to unpickle ({type(exc).__name__}: {exc})",
            hint="the classes it needs must be importable",
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"'{path.name}' holds a {type(module).__name__}, not an nn.Module")
    return module, "pickle"


def _load_factory(
    spec: str, weights: Path | None, factory_args: dict[str, Any], strip_prefix: str
) -> tuple[Any, Path | None]:
    """Build the model from a factory spec; return it and the source file that defines the factory, if any."""
    import torch

    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise InputError(f"model source '{target}' does not exist")
            module_spec = importlib.util.spec_from_file_location(f"_edgekit_user_{file.stem}", file)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
            source: Path | None = file
        else:
            module = importlib.import_module(target)
            module_file = getattr(module, "__file__", None)  # None for namespace and built-in modules
            source = Path(module_file) if module_file and Path(module_file).is_file() else None
    except ImportError as exc:
        raise InputError(
            f"cannot import '{target}' ({exc})", hint="check the spelling and that it is on PYTHONPATH"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"'{target}' has no callable '{attr}'")
    try:
        model = factory(**factory_args)
    except TypeError as exc:
        wanted = _parameters(factory)
        raise InputError(
            f"'{spec}' cannot be called with {factory_args or 'no arguments'} ({exc})",
            hint=f"pass its arguments: --factory-args '{{...}}' (it takes: {wanted})" if wanted else None,
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"'{spec}' returned a {type(model).__name__}, not an nn.Module")
    if weights is not None:
        _load_weights(model, weights, strip_prefix)
    return model, source


def _parameters(factory: Any) -> str:
    import inspect

    try:
        return ", ".join(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return ""


def _factory_facts(spec: str, source: Path | None, weights: Path | None) -> dict[str, Any]:
    """Return the source facts of a factory model: what defines it and what fills it, hashed apart and together.

    The source hash covers the file that defines the factory only, not the modules it imports.
    """
    source_sha = sha256_of(source) if source else None
    weights_sha = sha256_of(weights) if weights else None
    combined = None
    if source_sha or weights_sha:
        combined = hashlib.sha256(f"{source_sha or ''}\n{weights_sha or ''}".encode()).hexdigest()
    return {
        "spec": spec,
        "source": str(source) if source else None,
        "weights": str(weights) if weights else None,
        "source_sha256": source_sha,
        "weights_sha256": weights_sha,
        "sha256": combined,
    }


def _load_weights(model: Any, weights: Path, strip_prefix: str = "") -> None:
    import torch

    if not weights.is_file():
        raise InputError(f"weights file '{weights}' does not exist")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"'{weights.name}' is not a state dict loadable with weights_only=True ({type(exc).__name__})",
            hint="save it with torch.save(model.state_dict(), path)",
        ) from None
    if not isinstance(state, dict):
        raise InputError(f"'{weights.name}' holds a {type(state).__name__}, not a state dict")
    if strip_prefix:
        state = {k.removeprefix(strip_prefix): v for k, v in state.items()}
    expected = set(model.state_dict())
    if set(state) == expected:
        model.load_state_dict(state)
        return
    raise InputError(_mismatch(weights.name, state, expected), hint=_weights_hint(state, expected))


def _mismatch(name: str, state: dict[str, Any], expected: set[str]) -> str:
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    parts = [
        f"{len(missing)} missing ({few(missing)})" if missing else "",
        f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
    ]
    return f"'{name}' does not fit the model: " + "; ".join(p for p in parts if p)


def _weights_hint(state: dict[str, Any], expected: set[str]) -> str | None:
    """Say what would match: a common prefix to strip, or a wrapper key holding the real state dict."""
    for key in ("state_dict", "model", "model_state_dict", "net"):
        inner = state.get(key)
        if isinstance(inner, dict) and set(inner) & expected:
            return f"the weights are under the key '{key}': save torch.load(...)['{key}'] as the state dict"
    prefixes = {k.split(".", 1)[0] + "." for k in state if "." in k}
    for prefix in sorted(prefixes):
        stripped = {k.removeprefix(prefix) for k in state}
        if stripped == expected:
            return (
                f"every key matches once '{prefix}' is stripped (a DataParallel checkpoint?): --strip-prefix {prefix}"
            )
        if len(stripped & expected) > len(set(state) & expected):
            matched = len(stripped & expected)
            return f"{matched} of {len(expected)} keys match once '{prefix}' is stripped: --strip-prefix {prefix}"
    return None


def _example_inputs(module: Any, shape: tuple[int, ...], dtype: str) -> dict[str, np.ndarray] | None:
    """Return the example inputs the recipe's input.shape or the model's `example_input()` gives, else None."""
    import torch

    if shape:
        if dtype not in _DTYPES:
            raise InputError(f"input dtype '{dtype}' is not supported", hint=f"one of {', '.join(_DTYPES)}")
        if np.issubdtype(_DTYPES[dtype], np.integer):
            return {SINGLE_INPUT: np.zeros(shape, dtype=_DTYPES[dtype])}
        return {SINGLE_INPUT: np.random.default_rng(0).standard_normal(shape).astype(_DTYPES[dtype])}
    make = getattr(module, "example_input", None)
    if not callable(make):
        return None
    made = make()
    tensors = list(made) if isinstance(made, tuple | list) else [made]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise InputError("the model's example_input() must return a tensor or a tuple of tensors")
    names = input_names(module, len(tensors))
    return {name: t.detach().numpy() for name, t in zip(names, tensors, strict=True)}
