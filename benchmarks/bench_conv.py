"""ist's numba conv kernels against PyTorch on Lee et al.'s Simple-CNN and ResNet-8, one thread.

    pip install torch==2.13.0          # dev only: ist never imports torch
    python benchmarks/bench_conv.py    # prints markdown tables

A training step is forward, softmax cross-entropy backward and a heavy-ball momentum update
(lr 0.01, momentum 0.9) of the whole network on one batch, at B = 32 and 128, float32, one
thread for numba, OpenBLAS and torch. The two networks are written out here from the kernels
of ``ist_cli.kernels.conv`` (NCHW, HWIO weights, one flat parameter vector, the update by
``kernels.sgd.sgd_update``), and in PyTorch idiomatically (``nn.Conv2d`` etc., ``optim.SGD``):

- Simple-CNN (28x28x1): conv 5x5x32 VALID, ReLU, 2x2 max-pool, conv 5x5x64 VALID, ReLU, 2x2
  max-pool, dense 1024 -> 10; 62,346 parameters.
- ResNet-8 (32x32x3): conv 3x3x16, then three stages of one pre-activation block (ReLU, conv
  3x3, ReLU, conv 3x3, plus the shortcut: identity in the first stage, else a 2x2 average pool
  of the ReLU output, zero-padded to the new channel count), 16/32/64 channels, stride 2 at
  stages 2 and 3, no batch norm; ReLU, global average pool, dense 64 -> 10; 75,050
  parameters. Padding 1 on every side of the 3x3 convolutions (PyTorch's usual choice; TF's
  SAME pads 0 on top at stride 2, which costs the same).

Before any timing, one float64 step of each network from the same weights and batch must give
the same loss and updated weights in both (1e-9), so both time the same computation. Then
repetitions of ours and PyTorch's alternate (each a few steps); per image, the median and
minimum wall time and the median CPU time of this thread (both sides run on it; on a loaded
machine wall time includes waiting for a core) are reported with the achieved GFLOP/s: FLOPs
counted analytically, 2*K*C_out per output pixel per product (forward, weight gradient, and
input gradient except the first layer), elementwise work not counted. Last, the machine's single-thread sgemm rate (numpy's
OpenBLAS, the library the kernels call) on square float32 products.

``--layout`` instead times each convolution of the two networks (forward and backward, no
bias) in the kernels' NCHW layout against the NHWC version in ``benchmarks/conv_nhwc.py``
(same BLAS), CPU time of this thread: the measurement behind the choice of NCHW.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import numba  # noqa: E402
import numpy as np  # noqa: E402

from ist_cli.kernels import conv  # noqa: E402
from ist_cli.kernels.sgd import sgd_update, softmax_xent  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    print("bench_conv: PyTorch is not installed; install it into the dev venv with "
          "`pip install torch==2.13.0` (CPU wheel)", file=sys.stderr)
    sys.exit(2)

LR, MOMENTUM = 0.01, 0.9
CLASSES = 10
TOLERANCE = 1e-9


# ----------------------------------------------------------------------------- layers
class Conv:
    """One convolution's shape and its place in the flat parameter vector (HWIO weight, bias)."""

    def __init__(self, kh: int, c_in: int, c_out: int, stride: int = 1, pad: int = 0) -> None:
        self.shape = (kh, kh, c_in, c_out)
        self.stride, self.pad = stride, pad
        self.size = kh * kh * c_in * c_out + c_out
        self.offset = 0

    def out_size(self, size: int) -> int:
        return (size + 2 * self.pad - self.shape[0]) // self.stride + 1

    def views(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = int(np.prod(self.shape))
        w = flat[self.offset:self.offset + n].reshape(self.shape)
        return w, flat[self.offset + n:self.offset + self.size]

    def flops(self, in_size: int, first: bool) -> int:
        """Forward + weight gradient (+ input gradient unless first), per image."""
        kh, kw, c_in, c_out = self.shape
        pixels = self.out_size(in_size) ** 2
        return (2 if first else 3) * 2 * pixels * kh * kw * c_in * c_out


def place(layers: list[Conv]) -> int:
    """Offsets in one flat vector; the total size."""
    total = 0
    for layer in layers:
        layer.offset = total
        total += layer.size
    return total


def init(layers: list[Conv], size: int, dtype: np.dtype, seed: int) -> np.ndarray:
    """Variance scaling (normal, std sqrt(1/fan_in)) weights, zero biases."""
    rng = np.random.default_rng(seed)
    flat = np.zeros(size, dtype=dtype)
    for layer in layers:
        w, _ = layer.views(flat)
        fan_in = layer.shape[0] * layer.shape[1] * layer.shape[2]
        w[...] = rng.standard_normal(w.shape) * np.sqrt(1.0 / fan_in)
    return flat


def forward(layer: Conv, params: np.ndarray, x: np.ndarray, out: np.ndarray, residual: np.ndarray,
            relu_out: np.ndarray) -> None:
    w, b = layer.views(params)
    conv.conv2d_forward(x=x, weight=w, bias=b, out=out, stride=layer.stride, pad_h=layer.pad, pad_w=layer.pad,
                        residual=residual, relu_out=relu_out)


def backward(layer: Conv, params: np.ndarray, grad: np.ndarray, x: np.ndarray, dout: np.ndarray,
             dx: np.ndarray, accumulate_dx: bool, relu_mask: np.ndarray) -> None:
    w, _ = layer.views(params)
    dw, db = layer.views(grad)
    conv.conv2d_backward(x=x, weight=w, dout=dout, dweight=dw, dbias=db, dx=dx, stride=layer.stride,
                         pad_h=layer.pad, pad_w=layer.pad, beta=0.0, accumulate_dx=accumulate_dx,
                         relu_mask=relu_mask)


class Net:
    """What both numba networks share: flat parameters, gradient, velocity, the update."""

    layers: list[Conv]

    def setup(self, dtype: np.dtype, seed: int) -> None:
        self.size = place(self.layers)
        self.params = init(self.layers, self.size, dtype, seed)
        self.grad = np.zeros_like(self.params)
        self.velocity = np.zeros_like(self.params)
        self.no_mask = self.params[:0]

    def step(self, X: np.ndarray, y: np.ndarray) -> float:
        loss = self.forward_backward(X, y)
        sgd_update(params=self.params, grad=self.grad, velocity=self.velocity, mask=self.no_mask, size=self.size,
                   lr=LR, momentum=MOMENTUM, nesterov=False)
        return loss

    def forward_backward(self, X: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError


# ----------------------------------------------------------------------------- Simple-CNN
class SimpleCNN(Net):
    side, channels = 28, 1

    def __init__(self, batch: int, dtype: type = np.float32, seed: int = 0) -> None:
        self.c1, self.c2, self.fc = Conv(5, 1, 32), Conv(5, 32, 64), Conv(1, 1024, CLASSES)
        self.layers = [self.c1, self.c2, self.fc]
        dtype = np.dtype(dtype)
        self.setup(dtype, seed)
        B = batch
        e = dict(dtype=dtype)
        self.z1, self.p1 = np.empty((B, 32, 24, 24), **e), np.empty((B, 32, 12, 12), **e)
        self.z2, self.p2 = np.empty((B, 64, 8, 8), **e), np.empty((B, 64, 4, 4), **e)
        self.a1, self.a2 = np.empty(self.p1.shape, np.int64), np.empty(self.p2.shape, np.int64)
        self.logits, self.dlogits = np.empty((B, CLASSES, 1, 1), **e), np.empty((B, CLASSES, 1, 1), **e)
        self.dz1, self.dp1 = np.empty_like(self.z1), np.empty_like(self.p1)
        self.dz2, self.dp2 = np.empty_like(self.z2), np.empty_like(self.p2)
        self.none = np.empty((0, 0, 0, 0), dtype)  # switches an optional kernel argument off

    def flops(self) -> int:
        return self.c1.flops(28, True) + self.c2.flops(12, False) + self.fc.flops(1, False)

    def forward_backward(self, X: np.ndarray, y: np.ndarray) -> float:
        P, G, B, no = self.params, self.grad, X.shape[0], self.none
        pool = dict(pool_h=2, pool_w=2, stride=2, pad_h=0, pad_w=0, relu=True)
        forward(self.c1, P, X, self.z1, no, no)
        conv.maxpool_forward(x=self.z1, out=self.p1, argmax=self.a1, **pool)  # ReLU fused into the pool
        forward(self.c2, P, self.p1, self.z2, no, no)
        conv.maxpool_forward(x=self.z2, out=self.p2, argmax=self.a2, **pool)
        flat = self.p2.reshape(B, 1024, 1, 1)  # NCHW flatten: (c, h, w), as PyTorch's
        forward(self.fc, P, flat, self.logits, no, no)
        loss = softmax_xent(logits=self.logits.reshape(B, CLASSES), y=y,
                                 dlogits=self.dlogits.reshape(B, CLASSES))
        backward(self.fc, P, G, flat, self.dlogits, self.dp2.reshape(B, 1024, 1, 1), False, no)
        conv.maxpool_backward(dout=self.dp2, argmax=self.a2, dx=self.dz2)  # ReLU' rides in argmax
        backward(self.c2, P, G, self.p1, self.dz2, self.dp1, False, no)
        conv.maxpool_backward(dout=self.dp1, argmax=self.a1, dx=self.dz1)
        backward(self.c1, P, G, X, self.dz1, no, False, no)
        return loss

    def torch_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, CLASSES))

    def torch_convs(self, model: nn.Module) -> list:
        return [model[0], model[3], model[7]]


# ----------------------------------------------------------------------------- ResNet-8
class ResNet8(Net):
    side, channels = 32, 3

    def __init__(self, batch: int, dtype: type = np.float32, seed: int = 0) -> None:
        self.stem = Conv(3, 3, 16, 1, 1)
        self.blocks = [(Conv(3, 16, 16, 1, 1), Conv(3, 16, 16, 1, 1)),
                       (Conv(3, 16, 32, 2, 1), Conv(3, 32, 32, 1, 1)),
                       (Conv(3, 32, 64, 2, 1), Conv(3, 64, 64, 1, 1))]
        self.fc = Conv(1, 64, CLASSES)
        self.layers = [self.stem] + [c for block in self.blocks for c in block] + [self.fc]
        dtype = np.dtype(dtype)
        self.setup(dtype, seed)
        B, e = batch, dict(dtype=dtype)
        sides = [32, 32, 16, 8]
        widths = [16, 16, 32, 64]
        # z[s]: the stage input (pre-ReLU sum), r[s] its ReLU, h[s]/hr[s]: the block's middle
        self.z = [np.empty((B, widths[s], sides[s], sides[s]), **e) for s in range(4)]
        self.r = [np.empty_like(self.z[s]) for s in range(4)]
        self.h = [np.empty_like(self.z[s + 1]) for s in range(3)]
        self.dz = [np.empty_like(a) for a in self.z]  # dz[0] lives in dz[1] (identity shortcut)
        self.dr = [np.empty_like(a) for a in self.r]  # only dr[0] and dr[3] are used
        self.dh = [np.empty_like(a) for a in self.h]
        self.pooled, self.dpooled = np.empty((B, 64, 1, 1), **e), np.empty((B, 64, 1, 1), **e)
        self.logits, self.dlogits = np.empty((B, CLASSES, 1, 1), **e), np.empty((B, CLASSES, 1, 1), **e)
        self.none = np.empty((0, 0, 0, 0), dtype)  # switches an optional kernel argument off

    def flops(self) -> int:
        total = self.stem.flops(32, True) + self.fc.flops(1, False)
        side = 32
        for a, b in self.blocks:
            total += a.flops(side, False)
            side = a.out_size(side)
            total += b.flops(side, False)
        return total

    def forward_backward(self, X: np.ndarray, y: np.ndarray) -> float:
        P, G, B, no = self.params, self.grad, X.shape[0], self.none
        z, r, h, dz, dr, dh = self.z, self.r, self.h, self.dz, self.dr, self.dh
        down = dict(pool_h=2, pool_w=2, stride=2, pad_h=0, pad_w=0)
        forward(self.stem, P, X, z[0], no, r[0])
        for s, (a, b) in enumerate(self.blocks):
            if s == 0:
                shortcut = z[0]  # identity shortcut (of the pre-ReLU input, as Lee's code)
            else:  # average-pooled ReLU output in the first channels, zeros in the others
                conv.avgpool_forward(x=r[s], out=z[s + 1], accumulate=False, **down)
                shortcut = z[s + 1]
            forward(a, P, r[s], h[s], no, h[s])  # ReLU in place
            forward(b, P, h[s], z[s + 1], shortcut, r[s + 1])  # + shortcut, and its ReLU
        conv.global_avgpool_forward(x=r[3], out=self.pooled.reshape(B, 64))
        forward(self.fc, P, self.pooled, self.logits, no, no)
        loss = softmax_xent(logits=self.logits.reshape(B, CLASSES), y=y,
                                 dlogits=self.dlogits.reshape(B, CLASSES))
        backward(self.fc, P, G, self.pooled, self.dlogits, self.dpooled, False, no)
        conv.global_avgpool_backward(dout=self.dpooled.reshape(B, 64), dx=dr[3], accumulate=False)
        conv.relu_backward(y=r[3], dout=dr[3], dx=dz[3], accumulate=False)
        for s in range(2, -1, -1):
            a, b = self.blocks[s]
            backward(b, P, G, h[s], dz[s + 1], dh[s], False, h[s])  # through the middle ReLU
            if s == 0:  # dz0 = dz1 (identity) + relu'(z0) * (conv a's input gradient)
                backward(a, P, G, r[s], dh[s], dr[s], False, no)
                conv.relu_backward(y=r[0], dout=dr[0], dx=dz[1], accumulate=True)  # dz[1] is now dz0
            else:  # dz_s = relu'(z_s) * (shortcut's gradient + conv a's input gradient)
                conv.avgpool_backward(dout=dz[s + 1], dx=dz[s], accumulate=False, **down)
                backward(a, P, G, r[s], dh[s], dz[s], True, r[s])
        backward(self.stem, P, G, X, dz[1], no, False, no)
        return loss

    def torch_model(self) -> nn.Module:
        return TorchResNet8()

    def torch_convs(self, model: nn.Module) -> list:
        return [model.stem] + [c for block in model.blocks for c in block] + [model.fc]


class TorchResNet8(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.ModuleList([nn.Conv2d(c_in, c_out, 3, stride=st, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)])
            for c_in, c_out, st in ((16, 16, 1), (16, 32, 2), (32, 64, 2)))
        self.fc = nn.Linear(64, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for a, b in self.blocks:
            r = F.relu(x)
            if a.stride[0] == 1:
                shortcut = x
            else:
                pooled = F.avg_pool2d(r, 2)
                shortcut = F.pad(pooled, (0, 0, 0, 0, 0, b.out_channels - pooled.shape[1]))
            x = b(F.relu(a(r))) + shortcut
        return self.fc(F.relu(x).mean(dim=(2, 3)))


# ----------------------------------------------------------------------------- weights between the two
def to_torch(net: Net, model: nn.Module) -> None:
    """Copy the flat parameters into the torch model: HWIO conv weights to PyTorch's OIHW, a
    dense layer's (1, 1, in, out) to ``nn.Linear``'s (out, in)."""
    with torch.no_grad():
        for layer, module in zip(net.layers, net.torch_convs(model), strict=True):
            w, b = layer.views(net.params)
            module.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1).reshape(module.weight.shape).copy()))
            module.bias.copy_(torch.from_numpy(b.copy()))


def from_torch(net: Net, model: nn.Module) -> np.ndarray:
    """The torch model's parameters in the flat layout (inverse of ``to_torch``)."""
    flat = np.zeros_like(net.params)
    for layer, module in zip(net.layers, net.torch_convs(model), strict=True):
        w, b = layer.views(flat)
        kh, kw, c_in, c_out = layer.shape
        w[...] = module.weight.detach().numpy().reshape(c_out, c_in, kh, kw).transpose(2, 3, 1, 0)
        b[...] = module.bias.detach().numpy()
    return flat


class Pair:
    """One network at one batch size in both implementations, on one fixed batch."""

    def __init__(self, kind: type, batch: int, dtype: type = np.float32) -> None:
        np_dtype = np.dtype(dtype)
        self.net = kind(batch, dtype)
        rng = np.random.default_rng(1)
        self.X = rng.standard_normal((batch, kind.channels, kind.side, kind.side)).astype(np_dtype)
        self.y = rng.integers(0, CLASSES, batch).astype(np.int64)
        self.model = self.net.torch_model().to(torch.float64 if np_dtype == np.float64 else torch.float32)
        to_torch(self.net, self.model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.X_t = torch.from_numpy(self.X)
        self.y_t = torch.from_numpy(self.y)

    def ours(self, steps: int) -> float:
        for _ in range(steps):
            loss = self.net.step(self.X, self.y)
        return loss

    def theirs(self, steps: int) -> float:
        for _ in range(steps):
            self.optimizer.zero_grad()
            loss = F.cross_entropy(self.model(self.X_t), self.y_t)
            loss.backward()
            self.optimizer.step()
        return float(loss.item())


def check(kind: type) -> float:
    """One float64 step of both from the same weights and batch; the max abs difference, or abort."""
    pair = Pair(kind, 8, np.float64)
    ours, theirs = pair.ours(1), pair.theirs(1)
    diff = max(abs(ours - theirs), float(np.max(np.abs(from_torch(pair.net, pair.model) - pair.net.params))))
    if not diff <= TOLERANCE:
        sys.exit(f"bench_conv: numba and torch disagree after one {kind.__name__} step: max abs difference "
                 f"{diff:.3g} > {TOLERANCE:g}; not timing")
    return diff


def interleaved(pair: Pair, steps: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per step, wall and CPU (this thread's: both run on it), of ours and of torch's,
    repetitions alternating."""
    pair.ours(1)
    pair.theirs(1)
    times: dict[str, list[float]] = {"ours": [], "ours cpu": [], "torch": [], "torch cpu": []}
    for _ in range(repeats):
        for name, run in (("ours", pair.ours), ("torch", pair.theirs)):
            wall, cpu = time.perf_counter(), time.thread_time()
            run(steps)
            times[name + " cpu"].append((time.thread_time() - cpu) / steps)
            times[name].append((time.perf_counter() - wall) / steps)
    return times


def sgemm_peak(size: int, repeats: int) -> tuple[float, float]:
    """Best single-thread GFLOP/s of a size x size float32 product (numpy's OpenBLAS), by wall
    time and by this thread's CPU time (the latter unaffected by waiting for a busy core)."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    wall = cpu = np.inf
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        np.matmul(a, b, out=out)
        cpu = min(cpu, time.thread_time() - start_cpu)
        wall = min(wall, time.perf_counter() - start)
    return 2 * size**3 / wall / 1e9, 2 * size**3 / cpu / 1e9


# ----------------------------------------------------------------------------- the NHWC alternative
def layout_table(batches: list[int], repeats: int) -> None:
    """CPU ms per image of each convolution's forward + backward, NCHW kernels vs NHWC."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conv_nhwc import nhwc_step

    convs = [("Simple-CNN conv1", SimpleCNN, 0, 28), ("Simple-CNN conv2", SimpleCNN, 1, 12),
             ("ResNet-8 stem", ResNet8, 0, 32), ("ResNet-8 16->16", ResNet8, 1, 32),
             ("ResNet-8 16->32 /2", ResNet8, 3, 32), ("ResNet-8 32->32", ResNet8, 4, 16),
             ("ResNet-8 32->64 /2", ResNet8, 5, 16), ("ResNet-8 64->64", ResNet8, 6, 8)]
    print("| convolution | B | NCHW ms/image | NHWC ms/image | NHWC / NCHW |")
    print("|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(3)
    none = np.empty((0, 0, 0, 0), np.float32)
    for label, kind, index, side in convs:
        for batch in batches:
            layer = kind(1).layers[index]
            kh, _, c_in, c_out = layer.shape
            out_side = layer.out_size(side)
            first = index == 0
            x = rng.standard_normal((batch, c_in, side, side)).astype(np.float32)
            w = rng.standard_normal(layer.shape).astype(np.float32)
            b = np.zeros(c_out, np.float32)
            out = np.empty((batch, c_out, out_side, out_side), np.float32)
            dw, db, dx = np.empty_like(w), np.empty_like(b), none if first else np.empty_like(x)
            xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            wh = w
            oh = np.empty((batch, out_side, out_side, c_out), np.float32)
            dwh, dxh = np.empty_like(wh), none if first else np.empty_like(xh)
            geo = dict(stride=layer.stride, pad_h=layer.pad, pad_w=layer.pad)
            runs = {
                "nchw": lambda: (
                    conv.conv2d_forward(x=x, weight=w, bias=b, out=out, residual=none, relu_out=none, **geo),  # noqa: B023
                    conv.conv2d_backward(x=x, weight=w, dout=out, dweight=dw, dbias=db, dx=dx, beta=0.0,  # noqa: B023
                                         accumulate_dx=False, relu_mask=none, **geo)),  # noqa: B023
                "nhwc": lambda: nhwc_step(x=xh, weight=wh, out=oh, dweight=dwh, dx=dxh, stride=layer.stride,  # noqa: B023
                                          pad=layer.pad),  # noqa: B023
            }
            times: dict[str, list[float]] = {"nchw": [], "nhwc": []}
            for fn in runs.values():
                fn()
            for _ in range(repeats):
                for name, fn in runs.items():
                    start = time.thread_time()
                    fn()
                    times[name].append((time.thread_time() - start) / batch * 1e3)
            a, c = np.median(times["nchw"]), np.median(times["nhwc"])
            print(f"| {label} | {batch} | {a:.3f} | {c:.3f} | {c / a:.2f} |", flush=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="alternating repetitions of each side")
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed repetition")
    parser.add_argument("--batches", default="32,128", help="comma-separated batch sizes")
    parser.add_argument("--nets", default="simple-cnn,resnet8", help="comma-separated: simple-cnn, resnet8")
    parser.add_argument("--layout", action="store_true", help="time each convolution NHWC vs NCHW instead")
    args = parser.parse_args()
    if args.layout:
        print(f"machine: {cpu_model()}; load average {os.getloadavg()[0]:.1f}; one thread; CPU time, median of "
              f"{args.repeats}\n")
        layout_table([int(b) for b in args.batches.split(",")], args.repeats)
        return
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    kinds = {"simple-cnn": SimpleCNN, "resnet8": ResNet8}
    chosen = [(name, kinds[name]) for name in args.nets.split(",")]
    diffs = {name: check(kind) for name, kind in chosen}
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start; "
          f"python {platform.python_version()}, torch {torch.__version__}, numba {numba.__version__}, "
          f"numpy {np.__version__}; threads: torch {torch.get_num_threads()}, numba/BLAS 1; float32")
    print("check: one float64 step agrees (max abs difference of loss and weights: "
          + ", ".join(f"{name} {d:.1e}" for name, d in diffs.items()) + f" <= {TOLERANCE:g})\n")
    print(f"Per training step (forward, backward, momentum update), {args.repeats} alternating repetitions of "
          f"{args.steps} steps; ms per image: median (min) of wall time, median of the thread's CPU time; "
          "GFLOP/s from the wall (CPU) medians:\n")
    print("| network | params | B | MFLOP/image | ours ms/image | ours CPU ms | ours GFLOP/s (CPU) | torch ms/image "
          "| torch CPU ms | torch GFLOP/s (CPU) | torch / ours (wall) | (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, kind in chosen:
        for batch in (int(b) for b in args.batches.split(",")):
            pair = Pair(kind, batch)
            times = interleaved(pair, args.steps, args.repeats)
            flops = pair.net.flops()
            ms = {key: float(np.median(v)) / batch * 1e3 for key, v in times.items()}
            best = {key: min(v) / batch * 1e3 for key, v in times.items()}
            print(f"| {name} | {pair.net.size:,} | {batch} | {flops / 1e6:.1f} "
                  f"| {ms['ours']:.3f} ({best['ours']:.3f}) | {ms['ours cpu']:.3f} "
                  f"| {flops / ms['ours'] / 1e6:.1f} ({flops / ms['ours cpu'] / 1e6:.1f}) "
                  f"| {ms['torch']:.3f} ({best['torch']:.3f}) | {ms['torch cpu']:.3f} "
                  f"| {flops / ms['torch'] / 1e6:.1f} ({flops / ms['torch cpu'] / 1e6:.1f}) "
                  f"| {ms['torch'] / ms['ours']:.2f} | {ms['torch cpu'] / ms['ours cpu']:.2f} |", flush=True)
    peaks = {size: sgemm_peak(size, 20) for size in (256, 512, 1024, 2048)}
    print("\nsingle-thread sgemm (numpy's OpenBLAS), best of 20, GFLOP/s by wall (CPU) time: "
          + ", ".join(f"{size}^3 {wall:.1f} ({cpu:.1f})" for size, (wall, cpu) in peaks.items())
          + f"; load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
