from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgekit.architecture import choose_int8_scheme
from edgekit.recipe import Scheme
from tests.tiny_models import tiny_cnn, tiny_encoder

IMAGE = np.zeros((1, 1, 8, 8), np.float32)


def test_cnn_with_a_heavy_classifier_stays_static() -> None:
    # mobilenet_v3_small's classifier holds more weights than its convolutions; dynamic int8
    # (ConvInteger) made it 11-27x slower in ONNX Runtime, so any convolution means static.
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 2000), nn.Linear(2000, 10))
    assert choose_int8_scheme(model, IMAGE)[0] is Scheme.INT8_STATIC


def test_token_models_and_mlps_go_dynamic() -> None:
    tokens = tiny_encoder().example_input().numpy()
    assert choose_int8_scheme(tiny_encoder(), tokens)[0] is Scheme.INT8_DYNAMIC
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    assert choose_int8_scheme(mlp, IMAGE)[0] is Scheme.INT8_DYNAMIC


def test_exported_graph_modules_are_read_by_their_ops() -> None:
    graph = torch.export.export(tiny_cnn(), (torch.zeros(1, 1, 8, 8),)).module()
    scheme, why = choose_int8_scheme(graph, IMAGE)
    assert scheme is Scheme.INT8_STATIC and "convolutional" in why
