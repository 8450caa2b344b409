"""Layer specs: parameter counts against hand arithmetic, the flat layout's invariants, the
MLP spec against today's MLP layout and init (bitwise), shapes against a plain-numpy forward,
and the initial weights' statistics against the laws they are drawn from."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal, stats

from ist_cli.models import mlp as mlp_model
from ist_cli.models import network as nw
from tests.network_reference import conv2d, forward, layer_outputs, pool


def conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


# ----------------------------------------------------------------------------- counts
def test_simple_cnn_has_lee_et_als_62346_parameters():
    # 28 -> conv5 -> 24 -> pool -> 12 -> conv5 -> 8 -> pool -> 4: 4*4*64 = 1024 inputs to the dense layer
    expected = conv(5, 1, 32) + conv(5, 32, 64) + (1024 * 10 + 10)
    assert expected == 62346
    net = nw.simple_cnn((1, 28, 28), 10)
    assert net.n_params == 62346
    assert sum(p.size for p in net.layout().params if p.kind == "b") == 106


def test_resnet8_has_75050_parameters_on_cifar_and_74762_on_grey_28x28():
    blocks = 2 * conv(3, 16, 16) + conv(3, 16, 32) + conv(3, 32, 32) + conv(3, 32, 64) + conv(3, 64, 64)
    assert conv(3, 3, 16) + blocks + 64 * 10 + 10 == 75050
    assert nw.resnet8((3, 32, 32), 10).n_params == 75050
    assert nw.resnet8((1, 28, 28), 10).n_params == conv(3, 1, 16) + blocks + 650 == 74762


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("net", [nw.simple_cnn(), nw.resnet8(), nw.resnet8((1, 28, 28)),
                                 nw.mlp([64, 30, 20, 10], batch_norm=True)], ids=["cnn", "resnet8", "resnet8-28", "mlp"])
def test_layout_is_contiguous_and_non_overlapping(net):
    layout = net.layout()
    params = sorted(layout.params, key=lambda p: p.offset)
    assert params == list(layout.params)  # layout order is offset order
    assert params[0].offset == 0
    for a, b in zip(params, params[1:], strict=False):
        assert b.offset == a.offset + a.size
    assert params[-1].offset + params[-1].size == layout.size
    assert len({p.name for p in params}) == len(params)
    flat = np.arange(layout.size, dtype=np.float64)
    covered = np.concatenate([view.ravel() for view in layout.named(flat).values()])
    np.testing.assert_array_equal(covered, flat)  # views tile the vector once each


@pytest.mark.parametrize("widths", [[64, 512, 512, 10], [7, 5, 3], [12, 2]])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_spec_matches_todays_mlp_layout_and_init_bitwise(widths, batch_norm):
    old = mlp_model.net_layout(widths, batch_norm)
    new = nw.mlp(widths, batch_norm).layout()
    assert new.size == old.size
    flat = np.random.default_rng(0).standard_normal(old.size)
    old_views, new_views = old.named(flat), new.named(flat)
    assert list(new_views) == list(old_views)  # same names, same order: W0, b0, gamma0, beta0, W1, ...
    for name, view in old_views.items():
        assert np.shares_memory(view, new_views[name]) and view.shape == new_views[name].shape
        assert new[name].offset == view.ctypes.data // 8 - flat.ctypes.data // 8
    for dtype in ("float32", "float64"):
        np.testing.assert_array_equal(nw.initial_params(nw.mlp(widths, batch_norm), 5, dtype),
                                      mlp_model.initial_params(old, 5, np.dtype(dtype)))


def test_hidden_units_are_neurons_or_channels():
    assert nw.mlp([8, 6, 4, 3]).hidden_units() == [(0, "neuron", 6), (1, "neuron", 4)]
    assert nw.simple_cnn().hidden_units() == [(0, "channel", 32), (1, "channel", 64)]
    assert [count for _, _, count in nw.resnet8().hidden_units()] == [16, 16, 16, 32, 32, 64, 64]


# ----------------------------------------------------------------------------- shapes
def test_simple_cnn_shapes():
    assert nw.simple_cnn().shapes() == [(32, 24, 24), (32, 24, 24), (32, 12, 12), (64, 8, 8), (64, 8, 8),
                                        (64, 4, 4), (1024,), (10,)]


@pytest.mark.parametrize(("shape", "sizes"), [((3, 32, 32), (32, 16, 8)), ((1, 28, 28), (28, 14, 7))])
def test_resnet8_shapes(shape, sizes):
    a, b, c = sizes
    assert nw.resnet8(shape).shapes() == [(16, a, a), (16, a, a), (32, b, b), (64, c, c), (64, c, c), (64,), (10,)]


def test_same_padding_follows_tensorflow():
    # TensorFlow: out = ceil(n / s), total = max((out - 1) s + k - n, 0), the odd pixel after
    assert nw.window_pads(28, 3, 2, "same") == (14, 0, 1)
    assert nw.window_pads(7, 3, 2, "same") == (4, 1, 1)
    assert nw.window_pads(32, 3, 1, "same") == (32, 1, 1)
    assert nw.window_pads(9, 4, 3, "same") == (3, 0, 1)
    assert nw.window_pads(9, 6, 3, "same") == (3, 1, 2)
    assert nw.window_pads(28, 5, 1, "valid") == (24, 0, 0)
    assert nw.window_pads(10, 3, 2, 1) == (5, 1, 1)


@pytest.mark.parametrize("net", [
    nw.simple_cnn((1, 28, 28)),
    nw.resnet8((3, 12, 12)),
    nw.resnet8((1, 9, 9)),  # odd sizes: padded stride-2 convs and pools
    nw.Network((2, 9, 7), (nw.Conv2D(3, (3, 2), stride=2, padding=1), nw.BatchNorm(), nw.ReLU(),
                           nw.AvgPool(2, 1, "same"), nw.MaxPool(3, 2, "same"), nw.Flatten(), nw.Dense(4))),
], ids=["cnn", "resnet8", "resnet8-odd", "mixed"])
def test_shape_inference_matches_the_reference_forward(net):
    X = np.random.default_rng(1).standard_normal((3, *net.input_shape))
    params = net.layout().named(nw.initial_params(net, 0, "float64"))
    assert layer_outputs(net, params, X) == net.shapes()
    assert np.isfinite(forward(net, params, X)).all()


def test_reference_conv_and_pools_against_scipy_and_by_hand():
    """The oracle itself: conv against scipy's correlation, pools on a hand-checked example."""
    rng = np.random.default_rng(2)
    x, W, b = rng.standard_normal((2, 3, 8, 7)), rng.standard_normal((3, 2, 3, 4)), rng.standard_normal(4)
    out = conv2d(x, W, b, nw.Conv2D(4, (3, 2)))
    for n in range(2):
        for o in range(4):
            expected = b[o] + sum(signal.correlate2d(x[n, c], W[:, :, c, o], mode="valid") for c in range(3))
            np.testing.assert_allclose(out[n, o], expected, atol=1e-12)
    strided = conv2d(x, W, b, nw.Conv2D(4, (3, 2), stride=2, padding=1))
    np.testing.assert_allclose(strided, conv2d(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), W, b,
                                               nw.Conv2D(4, (3, 2)))[:, :, ::2, ::2], atol=1e-12)
    img = np.arange(9.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(pool(img, nw.MaxPool(2, 2, "same"), "max")[0, 0], [[4, 5], [7, 8]])
    # "same" average pools divide by the real pixels only: the corner window holds just 8
    np.testing.assert_array_equal(pool(img, nw.AvgPool(2, 2, "same"), "mean")[0, 0], [[2, 3.5], [6.5, 8]])


@pytest.mark.parametrize("layers", [
    (nw.Dense(3),),  # a dense layer on an image needs a Flatten first
    (nw.Conv2D(4, 11),),  # window larger than the image
    (nw.BatchNorm(),),  # no weight layer to take its index from
    (nw.Residual((nw.Conv2D(4, 3, padding="same"),), "identity"),),  # 2 channels in, 4 out
    (nw.Residual((nw.Conv2D(2, 3, stride=2, padding="same"),), "pool-pad", stride=1),),
    (nw.Conv2D(2, 3, padding="full"),),
])
def test_bad_specs_fail_where_built(layers):
    with pytest.raises(ValueError):
        nw.Network((2, 10, 10), layers).layout()


# ----------------------------------------------------------------------------- init
def test_truncation_constant_is_the_truncated_normal_std():
    assert nw.TRUNCATED_STD == pytest.approx(stats.truncnorm.std(-2, 2), rel=1e-15)


def test_variance_scaling_init_statistics():
    net = nw.simple_cnn()
    flat = nw.initial_params(net, 7, "float64")
    views = net.layout().named(flat)
    for name, fan_in in (("W0", 25), ("W1", 800), ("W2", 1024)):
        w = views[name].ravel()
        target = np.sqrt(1.0 / fan_in)
        # the truncated law: std sqrt(1/fan_in), every draw within 2 std of the untruncated normal
        assert abs(w.std() / target - 1) < 6 / np.sqrt(2 * w.size) + 0.01
        assert abs(w.mean()) < 5 * target / np.sqrt(w.size)
        assert np.abs(w).max() <= 2 * target / nw.TRUNCATED_STD
    big = views["W1"].ravel() / np.sqrt(1 / 800) * nw.TRUNCATED_STD  # back to the [-2, 2] normal
    assert stats.kstest(big, stats.truncnorm(-2, 2).cdf).pvalue > 1e-4
    for name in ("b0", "b1", "b2"):
        assert not views[name].any()  # biases exactly 0
    np.testing.assert_array_equal(flat, nw.initial_params(net, 7, "float64"))  # one seed, one vector
    assert not np.array_equal(flat, nw.initial_params(net, 8, "float64"))


def test_batch_norm_starts_as_identity_scale():
    net = nw.Network((3, 6, 6), (nw.Conv2D(5, 3), nw.BatchNorm(), nw.ReLU(), nw.GlobalAvgPool(), nw.Dense(2)))
    views = net.layout().named(nw.initial_params(net, 0, "float32"))
    assert views["gamma0"].shape == (5,) and (views["gamma0"] == 1).all() and not views["beta0"].any()
    assert views["W0"].dtype == np.float32
