"""ExecuTorch quantization helpers: choose a scheme, run PT2E static or dynamic int8, describe the result.

Imported only by `edgekit.backends.executorch` inside its methods, so torch, torchao and executorch
load here and never on `import edgekit`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.architecture import decide
from edgekit.backends._executorch_lower import export_program
from edgekit.backends._layers import covered, module_path
from edgekit.errors import ConfigError, ExportError, first_line
from edgekit.recipe import CalibrationMethod, QuantizeConfig, Scheme

if TYPE_CHECKING:
    import torch

# Ops that carry weights (or do the heavy arithmetic) and are worth quantizing.
_COMPUTE = ("conv", "linear", "addmm", "matmul", "bmm", "mm", "embedding", "scaled_dot_product_attention")
_CONV = ("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose")
_ATTENTION = ("scaled_dot_product_attention", "softmax")
_DYNAMIC_TORCHAO = "torchao.quantize_(Int8DynamicActivationIntxWeightConfig, per-channel int8 weights)"
_DYNAMIC_PT2E = "pt2e XNNPACKQuantizer(is_dynamic=True)"
# The activation observers a calibration method maps to (torchao.quantization.pt2e). XNNPACK's stock
# static config uses HistogramObserver; "minmax" really is MinMaxObserver. Weights use min-max either way.
ACTIVATION_OBSERVERS = {CalibrationMethod.MINMAX: "MinMaxObserver", CalibrationMethod.HISTOGRAM: "HistogramObserver"}


def op_name(target: Any) -> str:
    """Return 'aten.conv2d.default'-style text for an FX node target."""
    return str(getattr(target, "__name__", target)) if not hasattr(target, "_schema") else str(target)


def op_census(graph_module: torch.fx.GraphModule) -> Counter[str]:
    """Count the call_function ops of a graph by name."""
    return Counter(op_name(n.target) for n in graph_module.graph.nodes if n.op == "call_function")


def choose_scheme(census: Counter[str], examples: tuple[np.ndarray, ...]) -> tuple[Scheme, str]:
    """Pick int8-static or int8-dynamic for `auto`, and say why."""

    def count(words: tuple[str, ...]) -> int:
        return sum(c for op, c in census.items() if any(f".{w}" in op or op.startswith(w) for w in words))

    return decide(
        convs=count(_CONV),
        linears=count(("linear", "addmm")),
        integer_input=any(np.issubdtype(x.dtype, np.integer) for x in examples),
        embedding=bool(count(("embedding",))),
        attention=bool(count(_ATTENTION) and count(("matmul", "bmm", "scaled_dot_product_attention"))),
    )


def static_int8(
    model: torch.nn.Module,
    examples: tuple[np.ndarray, ...],
    calibration: tuple[np.ndarray, ...],
    config: QuantizeConfig,
    dynamic: Any = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Quantize with PT2E and XNNPACKQuantizer, calibrating one sample at a time.

    Layers under `config.keep_float` are not annotated, so they stay float (and run in XNNPACK fp32).
    Returns the quantized graph, its float twin (the calibrated graph before conversion: same node
    names, BatchNorm folded the same way, observers pass values through) and how it was quantized.
    """
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    _check_calibration_method(config)
    count = min((len(a) for a in calibration), default=0)
    if count == 0:
        raise ExportError(
            "int8-static needs calibration samples and there are none", hint="give --data, or use scheme int8-dynamic"
        )
    graph = export_program(copy.deepcopy(model), examples, dynamic).module()
    quantizer = _static_quantizer()().set_global(quantization_config(config))
    _leave_float(quantizer, config.keep_float, graph)
    try:
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for i in range(count):
                prepared(*[torch.from_numpy(np.ascontiguousarray(a[i : i + 1])) for a in calibration])
        twin = copy.deepcopy(prepared)
        converted = convert_pt2e(prepared)
    except Exception as exc:  # torchao raises many types; the user needs the op, not the stack
        raise ExportError(
            f"PT2E static int8 quantization failed: {first_line(exc)}",
            hint="try --set quantize.scheme=int8-dynamic (suits Linear/attention models) or fp32",
        ) from exc
    return (
        converted,
        twin,
        {
            "path": "pt2e XNNPACKQuantizer (symmetric, static)",
            "calibration_samples": count,
            "calibration_method": config.calibration_method.value,
            "activation_observer": ACTIVATION_OBSERVERS[config.calibration_method],
            "per_channel": config.per_channel,
        },
    )


def quantization_config(config: QuantizeConfig, *, is_dynamic: bool = False) -> Any:
    """Return XNNPACK's symmetric config with the activation observer of `config.calibration_method`."""
    import torchao.quantization.pt2e as observers
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    base = get_symmetric_quantization_config(is_per_channel=config.per_channel, is_dynamic=is_dynamic)
    if is_dynamic:
        return base
    observer = getattr(observers, ACTIVATION_OBSERVERS[config.calibration_method])
    activation = dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=observer.with_args(eps=2**-12))
    return dataclasses.replace(base, input_activation=activation, output_activation=activation)


@functools.cache
def _static_quantizer() -> type:
    """XNNPACKQuantizer without its QAT-only conv+BatchNorm patterns, for post-training quantization.

    prepare_pt2e folds BatchNorm into the convolutions before annotating, so those patterns cannot
    match; yet building them traces 12 pattern graphs with torch.export on every call (~18 s on 2
    cores). Everything else is XNNPACK's own annotation.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    class PtqXnnpackQuantizer(XNNPACKQuantizer):
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if not (p.is_qat and "_bn" in p.name)]

    return PtqXnnpackQuantizer


def compute_layers(graph_module: torch.fx.GraphModule) -> list[str]:
    """Return the module paths of the graph's compute ops (what `quantize.keep_float` may name)."""
    return sorted(
        {
            module_path(n)
            for n in graph_module.graph.nodes
            if n.op == "call_function" and is_compute(op_name(n.target)) and module_path(n)
        }
    )


def _leave_float(quantizer: Any, keep_float: Iterable[str], graph_module: torch.fx.GraphModule) -> None:
    """Annotate nothing that comes from a module under `keep_float` (XNNPACKQuantizer's node filter).

    `set_module_name(name, None)` would say this, but executorch 1.5.1 asserts a config is given, so the
    node-level filter does it, matching `nn_module_stack` paths the same way as every backend (`_layers`).
    """
    paths = tuple(keep_float)
    if paths:
        readers = float_readers(graph_module, paths)
        quantizer.set_filter_function(lambda node: not covered(module_path(node), paths) and node.name not in readers)


def float_readers(graph_module: torch.fx.GraphModule, paths: tuple[str, ...]) -> set[str]:
    """Return the nodes that read a kept layer's output, through ops that only pass values on (relu, view...).

    Left unannotated too, so that the kept layer's output is never quantized on its way to them: a
    layer whose activations are the problem is repaired only when its readers read it in float. ONNX
    Runtime and Core ML keep a layer the same way.
    """
    kept = [n for n in graph_module.graph.nodes if covered(module_path(n), paths)]
    readers: set[str] = set()
    frontier = list(kept)
    while frontier:
        for user in frontier.pop().users:
            if covered(module_path(user), paths) or user.name in readers or user.op != "call_function":
                continue
            readers.add(user.name)
            if not is_compute(op_name(user.target)):
                frontier.append(user)  # a pass-through op: its readers read the same float values
    return readers


def dynamic_int8(
    model: torch.nn.Module, examples: tuple[np.ndarray, ...], config: QuantizeConfig, dynamic: Any = None
) -> tuple[Any, Any, dict[str, Any]]:
    """Quantize Linear weights to int8 with activations quantized at run time.

    torchao's `quantize_` runs first: PT2E dynamic quantization breaks on some BERT-style encoders
    (an aten.index receives non-integer indices once observers are inserted), while `quantize_`
    lowers to XNNPACK on them. It needs nn.Linear modules, so a graph loaded from .pt2 (which has
    none) and per-tensor weights (which it does not offer) take the PT2E path.
    """
    import torch

    errors: list[str] = []
    if config.per_channel and _has_linear_modules(model):
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
        from torchao.quantization.granularity import PerAxis

        candidate = copy.deepcopy(model)
        try:
            keep = config.keep_float
            quantize_(
                candidate,
                Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)),
                filter_fn=lambda module, fqn: isinstance(module, torch.nn.Linear) and not covered(fqn, keep),
            )
            program = export_program(candidate, examples, dynamic)  # proves it exports before we commit to this path
            return candidate, program.graph_module, {"path": _DYNAMIC_TORCHAO, "per_channel": True}
        except ExportError:
            raise
        except Exception as exc:
            errors.append(f"torchao quantize_: {first_line(exc)}")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = export_program(copy.deepcopy(model), examples, dynamic).module()
    quantizer = XNNPACKQuantizer().set_global(quantization_config(config, is_dynamic=True))
    _leave_float(quantizer, config.keep_float, graph)
    try:
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            prepared(*[torch.from_numpy(np.ascontiguousarray(x)) for x in examples])
        converted = convert_pt2e(prepared)
    except Exception as exc:
        errors.append(f"pt2e dynamic: {first_line(exc)}")
        raise ExportError(
            "int8-dynamic quantization failed: " + "; ".join(errors), hint="try --set quantize.scheme=fp32"
        ) from exc
    return (
        converted,
        converted,
        {
            "path": _DYNAMIC_PT2E,
            "per_channel": config.per_channel,
            **({"fallback_reason": errors[0]} if errors else {}),
        },
    )


def quantize_facts(census: Counter[str], graph_module: torch.fx.GraphModule) -> dict[str, Any]:
    """Describe what was quantized: q/dq node counts, quantized compute ops, compute ops left float."""
    quantized: Counter[str] = Counter()
    left_float: Counter[str] = Counter()
    float_layers: set[str] = set()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = op_name(node.target)
        if "quantize" in name or "choose_qparams" in name or not is_compute(name):
            continue
        fed_by_dequant = any("dequantize" in op_name(a.target) for a in node.all_input_nodes)
        (quantized if fed_by_dequant else left_float)[_short(name)] += 1
        if not fed_by_dequant:
            float_layers.add(module_path(node) or node.name)
    return {
        "quantize_nodes": sum(c for op, c in census.items() if "quantize" in op and "dequantize" not in op),
        "dequantize_nodes": sum(c for op, c in census.items() if "dequantize" in op),
        "quantized_ops": dict(sorted(quantized.items())),
        "float_ops": dict(sorted(left_float.items())),
        "quantized_count": sum(quantized.values()),
        "float_count": sum(left_float.values()),
        "float_layers": sorted(float_layers),  # module paths whose compute ops stayed float
    }


def is_compute(name: str) -> bool:
    return any(f".{word}" in name or f"_{word}" in name for word in _COMPUTE)


def _short(name: str) -> str:
    """'aten.conv2d.default' -> 'aten.conv2d'."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else name


def _has_linear_modules(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.Linear) for m in model.modules())


def _check_calibration_method(config: QuantizeConfig) -> None:
    if config.calibration_method not in ACTIVATION_OBSERVERS:
        offered = ", ".join(f'"{m.value}"' for m in ACTIVATION_OBSERVERS)
        raise ConfigError(
            (
                f"quantize.calibration_method '{config.calibration_method.value}' is not offered by ExecuTorch's "
                "XNNPACKQuantizer"
            ),
            hint=f"use quantize.calibration_method = {offered} for target android",
        )
