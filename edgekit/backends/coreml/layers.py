"""Which torch module each compute op of a converted ML program came from.

coremltools names MIL ops after the graph nodes (the FX node name for torch.export, a TorchScript
value name for a trace) and renames them in its passes (`linear` becomes `linear_0`, a conv fused with
its BatchNorm takes the BatchNorm's node name, fp16 adds `_cast_fp16`), so names alone do not say
which module an op belongs to. Its ops do carry their source as scopes on the in-memory program:
the torch.export node's `debug_handle` (`ScopeSource.EXIR_DEBUG_HANDLE`), or the TorchScript module
names. `LayerTagger` gives every FX node a handle before conversion and `read_layers` maps each
compute op back through it to `_layers.module_path(node)`. Scopes are not saved in the package, so the
map is written beside the reference programs (`layers.json`) for the diagnosis to read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.backends._layers import covered, module_path

# MIL ops that hold a layer's weights or do its arithmetic: what keep_float and the diagnosis name.
COMPUTE_OPS = ("conv", "conv_transpose", "linear", "matmul", "einsum", "lstm", "gru", "rnn", "gather")
LAYERS_FILE = "layers.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class MilLayer:
    """One compute op of the program and the torch modules it came from."""

    op: str  # the MIL op name (in the program it was read from)
    op_type: str  # "conv", "linear", ...
    modules: tuple[str, ...]  # the module path it is named by first; a fused BatchNorm's path after it

    @property
    def module(self) -> str:
        return self.modules[0]


class LayerTagger:
    """A `prepare` hook for the torch.export route: give every FX call node a debug handle, remember its module."""

    def __init__(self) -> None:
        self.modules: dict[int, tuple[str, ...]] = {}

    def __call__(self, program: Any) -> None:
        self.modules = {}  # a retry from core ATen tags a new graph
        for handle, node in enumerate(program.graph.nodes):
            if node.op == "call_function":
                node.meta["debug_handle"] = handle
                self.modules[handle] = _modules_of(node)


def read_layers(mlmodel: Any, tagger: LayerTagger) -> list[MilLayer]:
    """Return the compute ops of a freshly converted model with the module paths they came from.

    Ops whose source is unknown (made by a graph pass, or at the model's top level) are left out.
    """
    from edgekit.backends.coreml._private import converted_program, op_sources
    from edgekit.backends.coreml.proxy import operations

    layers = []
    for op in operations(converted_program(mlmodel).functions["main"]):
        if op.op_type not in COMPUTE_OPS:
            continue
        handles, script_names = op_sources(op)
        modules: tuple[str, ...] = ()
        for handle in handles:
            modules += tagger.modules.get(handle, ())
        if not handles and len(script_names) > 1:  # TorchScript: module names, then the value's own name
            modules = (".".join(script_names[:-1]),)
        modules = tuple(m for m in dict.fromkeys(modules) if m)
        if modules:
            layers.append(MilLayer(op=op.name, op_type=op.op_type, modules=modules))
    return layers


def kept_ops(layers: Iterable[MilLayer], keep_float: Sequence[str]) -> dict[str, MilLayer]:
    """Return {MIL op name: layer} for the layers `keep_float` covers (a path covers its submodules)."""
    return {layer.op: layer for layer in layers if any(covered(m, keep_float) for m in layer.modules)}


def known_modules(layers: Iterable[MilLayer]) -> set[str]:
    """Return every module path the compute ops are named by."""
    return {m for layer in layers for m in layer.modules}


def save_layers(layers: Sequence[MilLayer], folder: Path) -> None:
    (folder / LAYERS_FILE).write_text(json.dumps([asdict(layer) for layer in layers], indent=1), encoding="utf-8")


def load_layers(folder: Path) -> list[MilLayer]:
    """Read the map `save_layers` wrote ([] when there is none)."""
    path = folder / LAYERS_FILE
    if not path.is_file():
        return []
    return [
        MilLayer(op=item["op"], op_type=item["op_type"], modules=tuple(item["modules"]))
        for item in json.loads(path.read_text(encoding="utf-8"))
    ]


def _modules_of(node: Any) -> tuple[str, ...]:
    """Return the module paths of an FX node: a BatchNorm over a conv is named by the conv first.

    coremltools fuses conv + BatchNorm into one conv that keeps the BatchNorm's node (and handle);
    the user knows that layer as the conv.
    """
    path = module_path(node)
    source = node.args[0] if node.args else None
    if "batch_norm" in _target(node) and getattr(source, "op", None) == "call_function" and "conv" in _target(source):
        return (module_path(source), path)
    return (path,)


def _target(node: Any) -> str:
    return str(getattr(node.target, "__name__", node.target))


def covered_by(layer: MilLayer, path: str) -> bool:
    """Return whether the module path `path` covers this layer (by any of its module paths)."""
    return any(covered(m, [path]) for m in layer.modules)


def float_readers(program: Any, ops: Iterable[str], layers: Iterable[MilLayer]) -> dict[str, list[str]]:
    """Return {kept op: modules of the compute ops that read its output directly}, in `program`.

    With int8 activations those readers would have quantized that output on their input; a kept
    layer's output stays float, so they read float (their weights and outputs stay int8).
    """
    from edgekit.backends.coreml._private import fused_activations
    from edgekit.backends.coreml.proxy import operations

    named = {layer.op: layer.module for layer in layers}
    wanted = set(ops)
    readers: dict[str, list[str]] = {}
    for op in operations(program.functions["main"]):
        if op.name not in wanted:
            continue
        var = op.outputs[0]
        children = list(var.child_ops)
        if len(children) == 1 and children[0].op_type in fused_activations():
            var = children[0].outputs[0]
        readers[op.name] = sorted({named[c.name] for c in var.child_ops if c.name in named})
    return readers
