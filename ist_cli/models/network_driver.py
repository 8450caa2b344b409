"""Forward, softmax cross-entropy, backward and SGD steps of any layer spec (``models.network``),
by calls to the numba kernels of ``kernels.conv`` on the network's flat parameter vector.

One driver serves every architecture: it walks the spec once per pass and calls the kernel of
each layer (a dense layer is the conv kernel's one-GEMM 1x1 case), keeping each layer's input
on a tape for the backward pass. Activations are NCHW (the ``Flatten`` order of
``models.network``): a batch of flattened image rows ``X`` (N, C*H*W) is reshaped, not
transposed. Batch norm (the pre-activation ResNet's) uses the batch's statistics at training
and evaluation alike, written in vectorised numpy (one pass per channel axis). The gradient
is written over the whole flat vector (every entry, each pass), so it needs no zeroing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ist_cli.kernels import conv as ck
from ist_cli.kernels.mlp import BN_EPS
from ist_cli.kernels.sgd import sgd_update, softmax_xent
from ist_cli.models import network as nw


@dataclass
class _Record:
    """What one layer's backward needs: its spec, path, input and what its forward kept."""

    layer: object
    path: tuple[int, ...]
    x: np.ndarray
    out: np.ndarray | None = None
    extra: object = None


class NetworkDriver:
    """Training and inference passes of ``net`` (parameters: flat vectors of ``net.layout()``)."""

    def __init__(self, net: nw.Network) -> None:
        self.net = net
        self.layout = net.layout()
        self.size = self.layout.size
        self._params: dict[tuple[int, ...], dict[str, nw.Param]] = {}
        for param in self.layout.params:
            self._params.setdefault(param.path, {})[param.kind] = param

    # -- parameter views ------------------------------------------------------------
    def _view(self, flat: np.ndarray, path: tuple[int, ...], kind: str) -> np.ndarray | None:
        param = self._params.get(path, {}).get(kind)
        if param is None:
            return None
        return flat[param.offset : param.offset + param.size].reshape(param.shape)

    # -- forward --------------------------------------------------------------------
    def _run(self, layers: Sequence, prefix: tuple[int, ...], x: np.ndarray, params: np.ndarray,
             tape: list[_Record] | None) -> np.ndarray:
        i = 0
        while i < len(layers):
            if isinstance(layers[i], nw.ReLU) and i + 1 < len(layers) and isinstance(layers[i + 1], nw.MaxPool):
                # ReLU then max-pool, fused: max(relu(x)) = relu(max(x)); where a window is all <= 0
                # the kernel routes no gradient back, which is the ReLU's derivative (one pass, not three)
                x = self._forward_layer(layers[i + 1], (*prefix, i + 1), x, params, tape, relu=True)
                i += 2
                continue
            x = self._forward_layer(layers[i], (*prefix, i), x, params, tape)
            i += 1
        return x

    def _forward_layer(self, layer: object, path: tuple[int, ...], x: np.ndarray, params: np.ndarray,
                       tape: list[_Record] | None, relu: bool = False) -> np.ndarray:
        record = _Record(layer, path, x)
        if isinstance(layer, nw.Dense | nw.Conv2D):
            out = self._weighted(layer, path, x, params)
        elif isinstance(layer, nw.ReLU):
            out = np.empty_like(x)
            ck.relu_forward(x=x, out=out)
            record.out = out
        elif isinstance(layer, nw.MaxPool):
            out, argmax = self._maxpool(layer, x, relu)
            record.extra = argmax
        elif isinstance(layer, nw.AvgPool):
            out = np.empty((x.shape[0], *layer.out_shape(x.shape[1:])), dtype=x.dtype)
            ck.avgpool_forward(x=x, out=out, accumulate=False, **_pool_geometry(layer, x.shape))
        elif isinstance(layer, nw.GlobalAvgPool):
            out = np.empty(x.shape[:2], dtype=x.dtype)
            ck.global_avgpool_forward(x=x, out=out)
        elif isinstance(layer, nw.Flatten):
            out = x.reshape(x.shape[0], -1)
        elif isinstance(layer, nw.BatchNorm):
            out, record.extra = self._batch_norm(path, x, params)
        elif isinstance(layer, nw.Residual):
            out, record.extra = self._residual(layer, path, x, params, tape is not None)
        else:
            raise TypeError(f"no driver for layer {layer!r}")
        if tape is not None:
            tape.append(record)
        return out

    def _weighted(self, layer: nw.Dense | nw.Conv2D, path: tuple[int, ...], x: np.ndarray,
                  params: np.ndarray) -> np.ndarray:
        W = self._view(params, path, "W")
        b = self._view(params, path, "b")
        if b is None:
            b = np.zeros(W.shape[-1], dtype=params.dtype)
        if isinstance(layer, nw.Dense):
            out = np.empty((x.shape[0], layer.units), dtype=x.dtype)
            ck.conv2d_forward(x=x.reshape(*x.shape, 1, 1), weight=W.reshape(1, 1, *W.shape), bias=b,
                              out=out.reshape(*out.shape, 1, 1), stride=1, pad_h=0, pad_w=0,
                              residual=_NONE[x.dtype.char], relu_out=_NONE[x.dtype.char])
            return out
        top, _, left, _ = layer.pads(x.shape[1:])
        out = np.empty((x.shape[0], *layer.out_shape(x.shape[1:])), dtype=x.dtype)
        ck.conv2d_forward(x=x, weight=W, bias=b, out=out, stride=layer.stride, pad_h=top, pad_w=left,
                          residual=_NONE[x.dtype.char], relu_out=_NONE[x.dtype.char])
        return out

    def _maxpool(self, layer: nw.MaxPool, x: np.ndarray, relu: bool) -> tuple[np.ndarray, np.ndarray]:
        out = np.empty((x.shape[0], *layer.out_shape(x.shape[1:])), dtype=x.dtype)
        argmax = np.empty(out.shape, dtype=np.int64)
        ck.maxpool_forward(x=x, out=out, argmax=argmax, relu=relu, **_pool_geometry(layer, x.shape))
        return out, argmax

    def _batch_norm(self, path: tuple[int, ...], x: np.ndarray, params: np.ndarray):
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt(x64.var(axis=axes, keepdims=True) + BN_EPS)
        xhat = (x64 - mean) * inv_std
        gamma = self._view(params, path, "gamma").reshape(shape)
        beta = self._view(params, path, "beta").reshape(shape)
        out = (gamma * xhat + beta).astype(x.dtype)
        return out, (xhat, inv_std, axes, shape)

    def _residual(self, layer: nw.Residual, path: tuple[int, ...], x: np.ndarray, params: np.ndarray,
                  training: bool):
        pre = x
        if layer.preact:
            pre = np.empty_like(x)
            ck.relu_forward(x=x, out=pre)
        body_tape: list[_Record] | None = [] if training else None
        out = self._run(layer.body, path, pre, params, body_tape).copy()
        short_tape: list[_Record] | None = [] if training else None
        if isinstance(layer.shortcut, nw.Conv2D):
            out += self._forward_layer(layer.shortcut, (*path, len(layer.body)), pre, params, short_tape)
        elif layer.shortcut == "identity":
            out += x
        else:  # pool-pad: relu(x) average-pooled ("same"), zero channels appended
            pool = nw.AvgPool(layer.stride, layer.stride, "same")
            ck.avgpool_forward(x=pre, out=out, accumulate=True, **_pool_geometry(pool, pre.shape))
        return out, (pre, body_tape, short_tape)

    # -- backward -------------------------------------------------------------------
    def _back(self, tape: list[_Record], dout: np.ndarray, params: np.ndarray, grad: np.ndarray,
              want_dx: bool) -> np.ndarray | None:
        for k in range(len(tape) - 1, -1, -1):
            dout = self._back_one(tape[k], dout, params, grad, want_dx or k > 0)
        return dout

    def _back_one(self, record: _Record, dout: np.ndarray, params: np.ndarray, grad: np.ndarray,
                  want_dx: bool) -> np.ndarray | None:
        layer, x = record.layer, record.x
        if isinstance(layer, nw.Dense | nw.Conv2D):
            return self._weighted_back(layer, record.path, x, dout, params, grad, want_dx)
        if isinstance(layer, nw.ReLU):
            dx = np.empty_like(x)
            ck.relu_backward(y=record.out, dout=dout, dx=dx, accumulate=False)
            return dx
        if isinstance(layer, nw.MaxPool):
            dx = np.empty_like(x)
            ck.maxpool_backward(dout=np.ascontiguousarray(dout), argmax=record.extra, dx=dx)
            return dx
        if isinstance(layer, nw.AvgPool):
            dx = np.empty_like(x)
            ck.avgpool_backward(dout=np.ascontiguousarray(dout), dx=dx, accumulate=False,
                                **_pool_geometry(layer, x.shape))
            return dx
        if isinstance(layer, nw.GlobalAvgPool):
            dx = np.empty_like(x)
            ck.global_avgpool_backward(dout=np.ascontiguousarray(dout), dx=dx, accumulate=False)
            return dx
        if isinstance(layer, nw.Flatten):
            return dout.reshape(x.shape)
        if isinstance(layer, nw.BatchNorm):
            return self._batch_norm_back(record, dout, params, grad)
        return self._residual_back(record, dout, params, grad)

    def _weighted_back(self, layer: nw.Dense | nw.Conv2D, path: tuple[int, ...], x: np.ndarray, dout: np.ndarray,
                       params: np.ndarray, grad: np.ndarray, want_dx: bool) -> np.ndarray | None:
        W, gW = self._view(params, path, "W"), self._view(grad, path, "W")
        gb = self._view(grad, path, "b")
        if gb is None:
            gb = np.empty(W.shape[-1], dtype=grad.dtype)  # a bias-free conv: its sum is discarded
        dout = np.ascontiguousarray(dout)
        dx = np.empty_like(x) if want_dx else None
        none = _NONE[x.dtype.char]
        if isinstance(layer, nw.Dense):
            ck.conv2d_backward(x=x.reshape(*x.shape, 1, 1), weight=W.reshape(1, 1, *W.shape),
                               dout=dout.reshape(*dout.shape, 1, 1), dweight=gW.reshape(1, 1, *gW.shape), dbias=gb,
                               dx=none if dx is None else dx.reshape(*dx.shape, 1, 1), stride=1, pad_h=0, pad_w=0,
                               beta=0.0, accumulate_dx=False, relu_mask=none)
            return dx
        top, _, left, _ = layer.pads(x.shape[1:])
        ck.conv2d_backward(x=x, weight=W, dout=dout, dweight=gW, dbias=gb, dx=none if dx is None else dx,
                           stride=layer.stride, pad_h=top, pad_w=left, beta=0.0, accumulate_dx=False, relu_mask=none)
        return dx

    def _batch_norm_back(self, record: _Record, dout: np.ndarray, params: np.ndarray, grad: np.ndarray) -> np.ndarray:
        xhat, inv_std, axes, shape = record.extra
        d = dout.astype(np.float64)
        self._view(grad, record.path, "gamma")[...] = (d * xhat).sum(axis=axes)
        self._view(grad, record.path, "beta")[...] = d.sum(axis=axes)
        dxhat = d * self._view(params, record.path, "gamma").reshape(shape)
        dx = inv_std * (dxhat - dxhat.mean(axis=axes, keepdims=True)
                        - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))
        return dx.astype(record.x.dtype)

    def _residual_back(self, record: _Record, dout: np.ndarray, params: np.ndarray, grad: np.ndarray) -> np.ndarray:
        layer, x = record.layer, record.x
        pre, body_tape, short_tape = record.extra
        dout = np.ascontiguousarray(dout)
        dpre = self._back(body_tape, dout, params, grad, True)
        if isinstance(layer.shortcut, nw.Conv2D):
            dpre = dpre + self._back(short_tape, dout, params, grad, True)
        elif layer.shortcut == "pool-pad":
            pool = nw.AvgPool(layer.stride, layer.stride, "same")
            dpre = np.ascontiguousarray(dpre)
            ck.avgpool_backward(dout=dout, dx=dpre, accumulate=True, **_pool_geometry(pool, pre.shape))
        if layer.preact:
            dx = np.empty_like(x)
            ck.relu_backward(y=pre, dout=np.ascontiguousarray(dpre), dx=dx, accumulate=False)
        else:
            dx = np.array(dpre, dtype=x.dtype)
        if layer.shortcut == "identity":
            dx += dout
        return dx

    # -- public passes ----------------------------------------------------------------
    def images(self, X: np.ndarray) -> np.ndarray:
        """Rows (N, prod(input_shape)) as the network's input batch (a view when contiguous)."""
        return np.ascontiguousarray(X).reshape(X.shape[0], *self.net.input_shape)

    def logits(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(N, classes) outputs of the network on rows ``X``."""
        return self._run(self.net.layers, (), self.images(X), params[: self.size], None)

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray, grad: np.ndarray) -> float:
        """Mean softmax cross-entropy of rows ``X`` with labels ``y`` (int64); ``grad[:size]`` <- its gradient."""
        tape: list[_Record] = []
        logits = self._run(self.net.layers, (), self.images(X), params[: self.size], tape)
        dlogits = np.empty_like(logits)
        loss = softmax_xent(logits=logits, y=y, dlogits=dlogits)
        self._back(tape, dlogits, params[: self.size], grad[: self.size], False)
        return float(loss)

    def train_steps(self, params: np.ndarray, grad: np.ndarray, velocity: np.ndarray, mask: np.ndarray,
                    X: np.ndarray, y: np.ndarray, batches: np.ndarray, lrs: np.ndarray, momentum: float,
                    nesterov: bool) -> float:
        """R = len(batches) SGD steps (``kernels.sgd.sgd_update``: plain, heavy ball or Nesterov;
        ``mask`` 0/1 in the params' dtype, or empty: pruned entries stay exactly 0); the mean loss."""
        total = 0.0
        for step, rows in enumerate(batches):
            total += self.loss_and_grad(params, X[rows], y[rows], grad)
            sgd_update(params=params, grad=grad, velocity=velocity, mask=mask, size=self.size,
                       lr=float(lrs[step]), momentum=float(momentum), nesterov=bool(nesterov))
        return total / max(len(batches), 1)


# empty 4-D arrays: the kernels' "no such argument", per dtype character
_NONE = {char: np.empty((0, 0, 0, 0), dtype=char) for char in "fd"}


def _pool_geometry(layer: nw.Pool, shape: tuple[int, ...]) -> dict[str, int]:
    """Keyword arguments (window, stride, top/left padding) of a pool kernel on input ``shape`` (N, C, H, W)."""
    _, top, _ = nw.window_pads(shape[2], layer.size, layer.step, layer.padding)
    _, left, _ = nw.window_pads(shape[3], layer.size, layer.step, layer.padding)
    return {"pool_h": layer.size, "pool_w": layer.size, "stride": layer.step, "pad_h": top, "pad_w": left}
