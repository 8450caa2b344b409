"""The pre-activation ResNet spec: parameter counts against hand arithmetic (Dun et al.'s
ResNet-101 and the default), its layer order, the droppable blocks, shapes against the
plain-numpy reference forward."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.models import network as nw
from tests.network_reference import forward, layer_outputs


def conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out  # no bias: batch norm follows every conv


def bn(c: int) -> int:
    return 2 * c


def plain_block(c: int) -> int:
    return bn(c) + conv(3, c, c) + bn(c) + conv(3, c, c)


def strided_block(c_in: int, c: int) -> int:
    return bn(c_in) + conv(3, c_in, c) + bn(c) + conv(3, c, c) + conv(1, c_in, c)


def test_resnet101_counts_by_hand():
    # stem 3x3x3x64; stage 1: 3 plain 64-blocks; stages 2-4 start with a projection block
    per_partitioned = plain_block(256)
    assert per_partitioned == 1_180_672
    body = (conv(3, 3, 64) + 3 * plain_block(64)
            + strided_block(64, 128) + 3 * plain_block(128)
            + strided_block(128, 256) + 22 * plain_block(256)
            + strided_block(256, 512) + 2 * plain_block(512))
    for classes in (10, 100):
        net = nw.preact_resnet((3, 32, 32), classes, nw.RESNET101_BLOCKS, nw.RESNET101_WIDTHS)
        assert net.n_params == body + 512 * classes + classes
        assert len(net.droppable_blocks()) == 22
        assert [net.param_count((i,)) for i in net.droppable_blocks()] == [per_partitioned] * 22
    assert body + 5130 == 41_350_730  # ~41.3 M on CIFAR-10, of which the 22 blocks hold ~25.97 M
    assert 22 * per_partitioned == 25_974_784


def test_default_is_resnet20_deep_with_five_droppable_blocks():
    net = nw.preact_resnet()
    expected = (conv(3, 1, 16) + 2 * plain_block(16) + strided_block(16, 32) + 5 * plain_block(32)
                + strided_block(32, 64) + 650)
    assert net.n_params == expected == 174_906
    weights = net.weight_layers()
    assert len(weights) == 22  # 20 weight layers on the main path + 2 projections
    assert sum(1 for _, layer, _ in weights if getattr(layer, "kernel", 0) == 1) == 2
    assert net.shapes()[-3:] == [(64, 7, 7), (64,), (10,)]
    # the droppable blocks are the non-first blocks of the longest (second) stage
    residuals = [i for i, layer in enumerate(net.layers) if isinstance(layer, nw.Residual)]
    stage2 = [i for i in residuals if net.shapes()[i][0] == 32]
    assert net.droppable_blocks() == stage2[1:] and len(stage2) == 6
    assert nw.preact_resnet((3, 32, 32)).n_params == expected + conv(3, 3, 16) - conv(3, 1, 16)


def test_block_layer_order_follows_the_authors():
    """Plain block: bn, relu, conv, bn, relu, conv + x; strided block: bn, relu, then conv body
    plus a 1x1 strided projection of the same pre-activated input; convs without bias."""
    net = nw.preact_resnet((3, 32, 32), 10, (1, 2), (8, 16))
    layers = net.layers
    assert isinstance(layers[0], nw.Conv2D) and not layers[0].bias and layers[0].padding == 1
    plain = layers[1]
    assert [type(x).__name__ for x in plain.body] == ["BatchNorm", "ReLU", "Conv2D", "BatchNorm", "ReLU", "Conv2D"]
    assert plain.shortcut == "identity" and not plain.preact
    assert [type(x).__name__ for x in layers[2:4]] == ["BatchNorm", "ReLU"]
    strided = layers[4]
    assert [type(x).__name__ for x in strided.body] == ["Conv2D", "BatchNorm", "ReLU", "Conv2D"]
    assert strided.body[0].stride == 2 and strided.shortcut == nw.Conv2D(16, 1, 2, 0, "torch-uniform", bias=False)
    assert net.droppable_blocks() == [5]
    assert "b0" not in {p.name for p in net.layout().params}


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 9, 9)])
def test_shapes_match_the_reference_forward(shape):
    net = nw.preact_resnet(shape, 4, (1, 2, 2), (4, 6, 8))
    X = np.random.default_rng(3).standard_normal((3, *shape))
    params = net.layout().named(nw.initial_params(net, 0, "float64"))
    assert layer_outputs(net, params, X) == net.shapes()
    assert np.isfinite(forward(net, params, X)).all()
    # PyTorch's padding 1 at stride 2: out = (n - 1) // 2 + 1
    side = shape[1]
    for _ in range(2):
        side = (side - 1) // 2 + 1
    assert net.shapes()[-3] == (8, side, side)


def test_torch_uniform_init_bounds():
    net = nw.preact_resnet((3, 8, 8), 10, (1, 2), (4, 8))
    views = net.layout().named(nw.initial_params(net, 1, "float64"))
    for p in net.layout().params:
        if p.kind == "W":
            assert np.abs(views[p.name]).max() <= 1 / np.sqrt(p.fan_in)
    assert views[net.layout().params[-1].name].any()  # the dense bias is drawn, not zero


@pytest.mark.parametrize("kwargs", [dict(blocks=(2, 3), widths=(8,)), dict(blocks=(0, 2), widths=(4, 8)),
                                    dict(partitioned_stage=3)])
def test_bad_shapes_fail(kwargs):
    with pytest.raises(ValueError):
        nw.preact_resnet(**kwargs)


def test_droppable_block_needs_identity_shortcut():
    body = (nw.Conv2D(2, 3, padding=1),)
    with pytest.raises(ValueError):
        nw.Network((2, 6, 6), (nw.Residual(body, nw.Conv2D(2, 1), droppable=True),)).layout()
