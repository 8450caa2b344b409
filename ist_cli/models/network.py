"""A network as a sequence of layer specs: shapes, one flat parameter layout, one initialiser.

A spec says *what* a network is (frozen dataclasses: dense, conv2d, pools, flatten, ReLU,
batch norm, residual block); everything else is derived from it and the input shape:

- **shapes**: every layer's output shape, checked where it is built (a wrong spec fails at
  once, naming the layer, not deep inside a kernel);
- **one flat layout**: every parameter tensor has a name, a shape and an offset in one flat
  vector (``Layout.params``), in the order the layers come. A whole network is then one
  vector, copied, averaged, masked and sent as one array, whatever its architecture;
- **one initialiser** (``initial_params``): each weight layer states its law (``init``).

Conventions the kernels share:

- Images are (C, H, W) per sample (NCHW batches); ``Flatten`` reads them in that C-order, so a
  dense layer after it sees feature ``(c * H + h) * W + w``.
- A dense weight is (in, out), row-major, so a layer computes ``A @ W + b`` (as the MLP does).
  A conv weight is (kh, kw, in, out): the im2col GEMM's right-hand matrix, patches ordered
  (kh, kw, in), as Lee et al.'s TensorFlow code stores them.
- ``padding="same"`` follows TensorFlow: output ceil(size / stride), the padding total split
  with the extra row/column at the bottom/right; average pools count only real pixels.
- Every dense and conv layer has a ``unit``: a neuron of a dense layer, an output channel of a
  conv layer, the thing a subnetwork method can partition (``hidden_units``).

No forward or backward here: those belong to the kernels, which read the layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ist_cli.seeding import stream

Shape = tuple[int, ...]
INITS = ("variance-scaling", "torch-uniform")
# std of a standard normal truncated to [-2, 2]: dividing by it gives the truncated draw the
# wanted std (TensorFlow's variance_scaling_initializer uses this constant).
TRUNCATED_STD = 0.87962566103423978


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def window_pads(size: int, window: int, stride: int, padding: str | int) -> tuple[int, int, int]:
    """(output size, padding before, padding after) of a window sliding over ``size`` pixels."""
    if padding == "valid":
        before = after = 0
    elif padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + window - size, 0)
        before, after = total // 2, total - total // 2
    elif isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        before = after = padding
    else:
        raise ValueError(f"padding {padding!r}; expected 'valid', 'same' or an integer >= 0")
    out = (size + before + after - window) // stride + 1
    if out < 1:
        raise ValueError(f"a window of {window} with padding {padding!r} does not fit {size} pixels")
    return out, before, after


# ----------------------------------------------------------------------------- layer specs
@dataclass(frozen=True)
class Dense:
    """Fully connected layer with bias: (in,) -> (units,)."""

    units: int
    init: str = "variance-scaling"
    unit = "neuron"

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise ValueError(f"dense layer on input of shape {shape}; expected a vector (add a Flatten)")
        return (self.units,)

    def params(self, shape: Shape) -> list[tuple[str, Shape]]:
        return [("W", (shape[0], self.units)), ("b", (self.units,))]

    def fan_in(self, shape: Shape) -> int:
        return int(shape[0])


@dataclass(frozen=True)
class Conv2D:
    """2-D convolution: (C, H, W) -> (channels, Ho, Wo); weight (kh, kw, C, channels), and a
    bias unless ``bias=False`` (a conv followed by batch norm needs none: the norm removes it)."""

    channels: int
    kernel: int | tuple[int, int]
    stride: int = 1
    padding: str | int = "valid"
    init: str = "variance-scaling"
    bias: bool = True
    unit = "channel"

    def pads(self, shape: Shape) -> tuple[int, int, int, int]:
        """Padding (top, bottom, left, right) of this layer on input ``shape``."""
        (kh, kw), (_, h, w) = _pair(self.kernel), shape
        _, top, bottom = window_pads(h, kh, self.stride, self.padding)
        _, left, right = window_pads(w, kw, self.stride, self.padding)
        return top, bottom, left, right

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ValueError(f"conv2d on input of shape {shape}; expected (channels, height, width)")
        kh, kw = _pair(self.kernel)
        return (self.channels, window_pads(shape[1], kh, self.stride, self.padding)[0],
                window_pads(shape[2], kw, self.stride, self.padding)[0])

    def params(self, shape: Shape) -> list[tuple[str, Shape]]:
        weight = [("W", (*_pair(self.kernel), shape[0], self.channels))]
        return weight + [("b", (self.channels,))] if self.bias else weight

    def fan_in(self, shape: Shape) -> int:
        kh, kw = _pair(self.kernel)
        return kh * kw * int(shape[0])


@dataclass(frozen=True)
class Pool:
    """Max or average pool of ``size`` x ``size`` windows (stride ``size`` unless given)."""

    size: int = 2
    stride: int | None = None
    padding: str | int = "valid"

    @property
    def step(self) -> int:
        return self.size if self.stride is None else self.stride

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ValueError(f"pool on input of shape {shape}; expected (channels, height, width)")
        return (shape[0], window_pads(shape[1], self.size, self.step, self.padding)[0],
                window_pads(shape[2], self.size, self.step, self.padding)[0])


@dataclass(frozen=True)
class MaxPool(Pool):
    """Maximum over each window."""


@dataclass(frozen=True)
class AvgPool(Pool):
    """Mean over each window's real (not padded) pixels."""


@dataclass(frozen=True)
class GlobalAvgPool:
    """Mean over all pixels of each channel: (C, H, W) -> (C,)."""

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ValueError(f"global average pool on input of shape {shape}; expected (channels, height, width)")
        return (shape[0],)


@dataclass(frozen=True)
class Flatten:
    """(C, H, W) -> (C * H * W,), in C-order."""

    def out_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


@dataclass(frozen=True)
class ReLU:
    def out_shape(self, shape: Shape) -> Shape:
        return shape


@dataclass(frozen=True)
class BatchNorm:
    """Normalisation with batch statistics per feature (vector input) or per channel (images),
    then ``gamma * xhat + beta``; gamma and beta take the index of the weight layer before it."""

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def params(self, shape: Shape) -> list[tuple[str, Shape]]:
        return [("gamma", (shape[0],)), ("beta", (shape[0],))]


SHORTCUTS = ("identity", "pool-pad", "a Conv2D (projection)")


@dataclass(frozen=True)
class Residual:
    """Pre-activation residual block: ``body(relu(x)) + shortcut``.

    With ``preact`` the block's input x first goes through a ReLU (He et al.'s pre-activation
    ordering). ``shortcut="identity"`` adds x itself; ``"pool-pad"`` (Lee et al.'s ResNet
    without projection weights) adds relu(x) average-pooled over ``stride`` x ``stride`` windows
    ("same" padding) with zero channels appended up to the body's output channels; a
    ``Conv2D`` shortcut (a projection, He et al.'s option B) adds that conv of relu(x) (of x
    without ``preact``); its parameters follow the body's in the layout.

    ``droppable`` marks a block a depth-wise subnetwork method may skip (identity shortcut:
    skipping it leaves x unchanged), e.g. the partitioned blocks of ResIST.
    """

    body: tuple = field(default_factory=tuple)
    shortcut: str | Conv2D = "identity"
    stride: int = 1
    preact: bool = True
    droppable: bool = False

    def shortcut_shape(self, shape: Shape) -> Shape:
        if isinstance(self.shortcut, Conv2D):
            return self.shortcut.out_shape(shape)
        if self.shortcut == "identity":
            return shape
        if self.shortcut == "pool-pad":
            return AvgPool(self.stride, self.stride, "same").out_shape(shape)
        raise ValueError(f"shortcut {self.shortcut!r}; expected one of {', '.join(SHORTCUTS)}")

    def out_shape(self, shape: Shape) -> Shape:
        if self.droppable and self.shortcut != "identity":
            raise ValueError(f"a droppable block needs an identity shortcut, not {self.shortcut!r}")
        out = shape
        for layer in self.body:
            out = layer.out_shape(out)
        short = self.shortcut_shape(shape)
        fits = out == short if self.shortcut != "pool-pad" else (out[1:] == short[1:] and out[0] >= short[0])
        if not fits:
            raise ValueError(f"residual body gives {out} but its {self.shortcut} shortcut gives {short}")
        return out


Layer = Dense | Conv2D | MaxPool | AvgPool | GlobalAvgPool | Flatten | ReLU | BatchNorm | Residual
WEIGHTED = (Dense, Conv2D)


# ----------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Param:
    """One parameter tensor of the flat vector."""

    name: str  # W3, b3, gamma3, beta3: kind and the index of its weight layer
    shape: Shape
    offset: int
    path: tuple[int, ...]  # the layer: index in the network, then inside a residual body
    fan_in: int  # of its weight layer (what its initial scale depends on)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def kind(self) -> str:
        return self.name.rstrip("0123456789")


@dataclass(frozen=True)
class Layout:
    """Where every parameter tensor sits in the flat vector."""

    params: tuple[Param, ...]
    size: int

    def __getitem__(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def view(self, flat: np.ndarray, name: str) -> np.ndarray:
        param = self[name]
        return flat[param.offset : param.offset + param.size].reshape(param.shape)

    def named(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor as a view of ``flat``, in layout order."""
        return {p.name: flat[p.offset : p.offset + p.size].reshape(p.shape) for p in self.params}


@dataclass(frozen=True)
class Network:
    """A layer sequence on inputs of ``input_shape`` ((features,) or (C, H, W))."""

    input_shape: Shape
    layers: tuple

    def __post_init__(self) -> None:
        self.shapes()  # a spec that does not fit its input fails here

    def walk(self) -> Iterator[tuple[tuple[int, ...], object, Shape]]:
        """(path, layer, input shape) of every layer, residual bodies included, in order."""
        def visit(layers: Sequence, shape: Shape, prefix: tuple[int, ...]):
            for i, layer in enumerate(layers):
                yield (*prefix, i), layer, shape
                if isinstance(layer, Residual):
                    yield from visit(layer.body, shape, (*prefix, i))
                    if isinstance(layer.shortcut, Conv2D):  # the projection, after the body
                        yield (*prefix, i, len(layer.body)), layer.shortcut, shape
                shape = layer.out_shape(shape)

        yield from visit(self.layers, tuple(self.input_shape), ())

    def shapes(self) -> list[Shape]:
        """Output shape of every top-level layer."""
        out, shape = [], tuple(self.input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.out_shape(shape)
            except ValueError as exc:
                raise ValueError(f"layer {i} ({type(layer).__name__}): {exc}") from None
            out.append(shape)
        return out

    @property
    def output_shape(self) -> Shape:
        return self.shapes()[-1] if self.layers else tuple(self.input_shape)

    def layout(self) -> Layout:
        """The flat layout: per weight layer W then b, batch norm's gamma then beta after them."""
        params: list[Param] = []
        offset, index, fan_in = 0, -1, 0
        for path, layer, shape in self.walk():
            if isinstance(layer, WEIGHTED):
                index += 1
                fan_in = layer.fan_in(shape)
            elif isinstance(layer, BatchNorm):
                if index < 0:
                    raise ValueError(f"batch norm at layer {path} has no dense or conv layer before it")
            else:
                continue
            for kind, pshape in layer.params(shape):
                params.append(Param(f"{kind}{index}", tuple(pshape), offset, path, fan_in))
                offset += math.prod(pshape)
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError("two batch norms after one weight layer")
        return Layout(tuple(params), offset)

    @property
    def n_params(self) -> int:
        return self.layout().size

    def weight_layers(self) -> list[tuple[tuple[int, ...], object, Shape]]:
        """(path, layer, input shape) of every dense and conv layer, in layout order."""
        return [item for item in self.walk() if isinstance(item[1], WEIGHTED)]

    def droppable_blocks(self) -> list[int]:
        """Top-level indices of the residual blocks marked ``droppable``, in order."""
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, Residual) and layer.droppable]

    def param_count(self, path_prefix: tuple[int, ...]) -> int:
        """Parameters of the layer at ``path_prefix`` and everything inside it (e.g. one block)."""
        depth = len(path_prefix)
        return sum(p.size for p in self.layout().params if p.path[:depth] == tuple(path_prefix))

    def hidden_units(self) -> list[tuple[int, str, int]]:
        """(weight-layer index, unit kind, count) of every weight layer but the output one: the
        neurons and channels a subnetwork method may divide among workers."""
        layers = self.weight_layers()[:-1]
        return [(i, layer.unit, layer.units if isinstance(layer, Dense) else layer.channels)
                for i, (_, layer, _) in enumerate(layers)]


# ----------------------------------------------------------------------------- initialiser
def _truncated_normal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Standard normal draws redrawn until inside [-2, 2] (TensorFlow's truncated normal)."""
    z = rng.standard_normal(size)
    outside = np.flatnonzero(np.abs(z) > 2.0)
    while outside.size:
        z[outside] = rng.standard_normal(outside.size)
        outside = outside[np.abs(z[outside]) > 2.0]
    return z


def initial_params(net: Network, seed: int, dtype: np.dtype | str = "float32") -> np.ndarray:
    """The flat initial vector of ``net``, drawn in layout order from ``stream(seed, "init")``.

    Per weight layer's ``init``:
    - ``variance-scaling`` (Lee et al.; TensorFlow's ``variance_scaling_initializer`` defaults):
      W ~ normal truncated at 2 std, scaled so its std is sqrt(1 / fan_in); b = 0.
    - ``torch-uniform`` (PyTorch's Linear default, the IST MLP's): W and b ~ U(+-1/sqrt(fan_in)).
    Batch norm: gamma = 1, beta = 0.
    """
    layout = net.layout()
    inits = {path: layer.init for path, layer, _ in net.weight_layers()}
    for law in set(inits.values()):
        if law not in INITS:
            raise ValueError(f"init {law!r}; expected one of {', '.join(INITS)}")
    rng = stream(seed, "init")
    flat = np.zeros(layout.size, dtype=dtype)
    for param in layout.params:
        view = flat[param.offset : param.offset + param.size].reshape(param.shape)
        if param.kind == "gamma":
            view[...] = 1.0
        elif param.kind in ("W", "b") and inits[param.path] == "torch-uniform":
            bound = 1.0 / np.sqrt(float(param.fan_in))
            view[...] = rng.uniform(-bound, bound, size=param.shape)
        elif param.kind == "W":
            std = np.sqrt(1.0 / param.fan_in) / TRUNCATED_STD
            view[...] = (_truncated_normal(rng, param.size) * std).reshape(param.shape)
    return flat


# ----------------------------------------------------------------------------- builders
def simple_cnn(input_shape: Shape = (1, 28, 28), classes: int = 10) -> Network:
    """Lee et al.'s Simple-CNN: conv 5x5x32 VALID, ReLU, 2x2 max-pool, conv 5x5x64 VALID, ReLU,
    2x2 max-pool, dense to ``classes`` (62,346 parameters on 28x28x1, 10 classes)."""
    return Network(tuple(input_shape), (
        Conv2D(32, 5), ReLU(), MaxPool(2),
        Conv2D(64, 5), ReLU(), MaxPool(2),
        Flatten(), Dense(classes),
    ))


def resnet8(input_shape: Shape = (3, 32, 32), classes: int = 10) -> Network:
    """Lee et al.'s ResNet-8 without batch norm: conv 3x3x16, then one pre-activation block of
    two 3x3 convs per stage (16, 32, 64 channels; stride 2 and a pool-pad shortcut where the
    width doubles), ReLU, global average pool, dense. 75,050 parameters on 32x32x3 and
    74,762 on 28x28x1 (only the first conv's input channels differ)."""
    layers: list = [Conv2D(16, 3, padding="same")]
    previous = 16
    for channels in (16, 32, 64):
        stride = 1 if channels == previous else 2
        body = (Conv2D(channels, 3, stride=stride, padding="same"), ReLU(), Conv2D(channels, 3, padding="same"))
        layers.append(Residual(body, "identity" if channels == previous else "pool-pad", stride))
        previous = channels
    layers += [ReLU(), GlobalAvgPool(), Dense(classes)]
    return Network(tuple(input_shape), tuple(layers))


def mlp(widths: Sequence[int], batch_norm: bool = False) -> Network:
    """The IST MLP of ``widths`` (d_0, ..., d_L): dense (+ batch norm) + ReLU per hidden layer,
    PyTorch's init; its layout is ``models.mlp.net_layout``'s, tensor for tensor."""
    widths = [int(w) for w in widths]
    layers: list = []
    for width in widths[1:-1]:
        layers += [Dense(width, init="torch-uniform"), *([BatchNorm()] if batch_norm else []), ReLU()]
    layers.append(Dense(widths[-1], init="torch-uniform"))
    return Network((widths[0],), tuple(layers))


RESNET101_BLOCKS = (3, 4, 23, 3)  # Dun et al.'s pre-activation ResNet-101 of basic blocks
RESNET101_WIDTHS = (64, 128, 256, 512)


PREACT_BLOCKS, PREACT_WIDTHS = (2, 6, 1), (16, 32, 64)  # preact_resnet's default: ResNet-20's 9 blocks


def preact_resnet(input_shape: Shape = (1, 28, 28), classes: int = 10, blocks: Sequence[int] = PREACT_BLOCKS,
                  widths: Sequence[int] = PREACT_WIDTHS, partitioned_stage: int | None = None) -> Network:
    """Pre-activation ResNet of basic blocks with batch norm (batch statistics), as in Dun et
    al.'s ResIST code (``PreActResNet``; blocks (3, 4, 23, 3), widths 64-512 are its ResNet-101).

    conv 3x3 to ``widths[0]`` (padding 1, no bias); stage s holds ``blocks[s]`` blocks of
    ``widths[s]`` channels, its first strided by 2 (but stage 0's); a block computes
    ``a = relu(bn(x))``, ``conv3x3(relu(bn(conv3x3(a))))`` and adds x, or, where the stride or
    the width changes, a 1x1 projection conv of ``a`` (written as batch norm, ReLU, then a
    residual with a conv shortcut: the same function). Convs have no bias (batch norm follows
    each); global average pool, dense to ``classes``; PyTorch's default init throughout.
    The non-first blocks of ``partitioned_stage`` (default: the longest stage, the first of
    ties) are ``droppable``: the ones ResIST partitions. The default (2, 6, 1) x (16, 32, 64)
    has ResNet-20's 9 blocks and 20 weight layers (plus 2 projections) with 5 droppable blocks.
    """
    blocks, widths = [int(b) for b in blocks], [int(w) for w in widths]
    if len(blocks) != len(widths) or not blocks or min(blocks) < 1 or min(widths) < 1:
        raise ValueError(f"blocks {blocks} and widths {widths}: expected equal-length lists of positive sizes")
    stage = blocks.index(max(blocks)) if partitioned_stage is None else int(partitioned_stage)
    if not 0 <= stage < len(blocks):
        raise ValueError(f"partitioned stage {partitioned_stage}; expected 0 to {len(blocks) - 1}")

    def conv(channels: int, kernel: int, stride: int = 1) -> Conv2D:
        return Conv2D(channels, kernel, stride, 1 if kernel == 3 else 0, "torch-uniform", bias=False)

    layers: list = [conv(widths[0], 3)]
    previous = widths[0]
    for s, (count, width) in enumerate(zip(blocks, widths, strict=True)):
        for b in range(count):
            stride = 2 if s > 0 and b == 0 else 1
            if stride != 1 or width != previous:
                body = (conv(width, 3, stride), BatchNorm(), ReLU(), conv(width, 3))
                layers += [BatchNorm(), ReLU(), Residual(body, conv(width, 1, stride), stride, preact=False)]
            else:
                body = (BatchNorm(), ReLU(), conv(width, 3), BatchNorm(), ReLU(), conv(width, 3))
                layers.append(Residual(body, "identity", 1, preact=False, droppable=s == stage and b > 0))
            previous = width
    layers += [GlobalAvgPool(), Dense(classes, init="torch-uniform")]
    return Network(tuple(input_shape), tuple(layers))
