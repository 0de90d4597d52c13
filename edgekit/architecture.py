"""What a model is made of, to choose between static and dynamic int8 and to say why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.recipe import Scheme


@dataclass(frozen=True, slots=True)
class Composition:
    conv_weights: int  # parameters in convolutions
    linear_weights: int  # parameters in Linear / matmul layers
    has_embedding: bool
    has_attention: bool
    integer_input: bool


def composition(module: Any, example_input: np.ndarray) -> Composition:
    """Count convolution vs linear weights in an nn.Module or a torch.export GraphModule."""
    import torch

    conv = linear = 0
    embedding = attention = False
    for sub in module.modules():
        kind = type(sub).__name__
        if isinstance(sub, torch.nn.modules.conv._ConvNd):
            conv += sub.weight.numel()
        elif isinstance(sub, torch.nn.Linear):
            linear += sub.weight.numel()
        embedding |= isinstance(sub, torch.nn.Embedding)
        attention |= isinstance(sub, torch.nn.MultiheadAttention) or "Attention" in kind
    graph = getattr(module, "graph", None)
    if isinstance(graph, torch.fx.Graph):  # a torch.export GraphModule: read its ops
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            name = str(node.target)
            weight = _weight_numel(module, node)
            if "conv" in name:
                conv += weight
            elif "linear" in name or "addmm" in name:
                linear += weight
            embedding |= "embedding" in name
            attention |= "scaled_dot_product_attention" in name
    return Composition(conv, linear, embedding, attention, bool(np.issubdtype(example_input.dtype, np.integer)))


def choose_int8_scheme(module: Any, example_input: np.ndarray) -> tuple[Scheme, str]:
    """Return int8-static for convolutional models and int8-dynamic for Linear/attention models."""
    c = composition(module, example_input)
    return decide(
        convs=c.conv_weights,
        linears=c.linear_weights,
        integer_input=c.integer_input,
        embedding=c.has_embedding,
        attention=c.has_attention,
    )


def decide(*, convs: int, linears: int, integer_input: bool, embedding: bool, attention: bool) -> tuple[Scheme, str]:
    """The one rule every backend uses for `auto`, with the reason it gives.

    Any convolution makes a model convolutional: static int8 suits it, while dynamic int8 makes
    CNNs several times slower (ConvInteger; measured 11-27x on mobilenet_v3_small, whose classifier
    holds more weights than its convolutions). Token inputs, embeddings and attention go dynamic.
    """
    if integer_input or embedding or attention:
        why = "integer token input" if integer_input else "an embedding table" if embedding else "attention"
        return Scheme.INT8_DYNAMIC, f"the model has {why}: dynamic int8 keeps attention/Linear models accurate"
    if convs:
        return Scheme.INT8_STATIC, f"convolutional model ({convs} conv vs {linears} linear): static int8"
    if linears:
        return Scheme.INT8_DYNAMIC, "Linear-only model: dynamic int8"
    return Scheme.INT8_STATIC, "no conv or linear layers found: static int8 is the default"


def _weight_numel(module: Any, node: Any) -> int:
    if len(node.args) < 2 or getattr(node.args[1], "op", None) != "get_attr":
        return 0
    owner = module
    for part in str(node.args[1].target).split("."):
        owner = getattr(owner, part, None)
    return int(owner.numel()) if hasattr(owner, "numel") else 0
