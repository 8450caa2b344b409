"""Numba kernels of the MLP on flat parameter vectors (layout: ``ist_cli.models.mlp``).

They know nothing of processes or rounds: gather a subnet out of the full model, train it
for R steps (forward, softmax cross-entropy backward, SGD/momentum/Nesterov update,
optionally masked: the loss and the update are ``kernels.sgd``'s), scatter it back. Matrix products are BLAS ?gemm calls (``_gemm``) with
alpha and beta, so the bias rides in the forward product and a plain SGD weight update is the
gradient product itself. Layer order: Linear -> [BatchNorm with batch statistics] -> ReLU ->
times ``scale`` (IST's optional inverted-dropout scaling).

Shapes and dtypes shared by every kernel: a network with L layers has ``widths`` int64 (L+1,)
and ``offsets`` int64 (L, 4) (``ist_cli.models.mlp.NetLayout``); its parameters are one flat
C-contiguous vector ``params`` of the model's float dtype (float32 or float64) and at least
``size`` entries; ``X`` is (batch, widths[0]) of the same dtype, ``y`` int64 (batch,) class
ids; neuron ids are int64. Callers outside this package pass arguments by keyword.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from ist_cli.kernels import blas
from ist_cli.kernels.layout import BETA, GAMMA, B, W
from ist_cli.kernels.sgd import sgd_update, softmax_xent

BN_EPS = 1e-5  # PyTorch's BatchNorm1d default
# A bool constant passed to a kernel is typed as a literal: one compile of the callee per
# combination (``_copy_subnet`` twice, ``_gemm`` per pair of transpose flags). An element of
# this constant array is a plain bool, one compile for all: _OP[0] False, _OP[1] True (for
# ``_gemm``: as is, transposed).
_OP = np.array([False, True])


# ----------------------------------------------------------------------------- gather / scatter
@njit(cache=True, nogil=True)
def _ascending(ids: np.ndarray, width: int) -> np.ndarray:
    """The order (int64) that sorts the distinct ``ids`` (int64, each in [0, width)): np.argsort's
    order, as ids never tie, by one pass over a ``width`` table; half the first compile of a sort."""
    slot = np.full(width, -1, dtype=np.int64)
    for i in range(ids.shape[0]):
        slot[ids[i]] = i
    order = np.empty(ids.shape[0], dtype=np.int64)
    k = 0
    for value in range(width):
        if slot[value] >= 0:
            order[k] = slot[value]
            k += 1
    if k != ids.shape[0]:
        raise ValueError("_ascending: ids must be distinct")
    return order


@njit(cache=True, nogil=True)
def _copy_subnet(full: np.ndarray, full_offsets: np.ndarray, full_widths: np.ndarray,
                 sub: np.ndarray, sub_offsets: np.ndarray, sub_widths: np.ndarray,
                 neurons: np.ndarray, starts: np.ndarray, to_full: bool, skip_output_bias: bool) -> None:
    """The one index walk behind gather (``to_full`` False) and scatter (True).

    Layer l's subnet is the block ``W_l[rows, cols]`` with rows = ``neurons[starts[l]:starts[l+1]]``
    and cols the next layer's ids, plus the per-neuron vectors (bias, BN gamma/beta) on cols.
    The block is walked in ascending order of the full model's rows and columns (a block's ids
    come in the random order of the partition): the large side is then read or written in
    address order, which the hardware prefetches, and the subnet side is small and cached.
    """
    n_layers = full_widths.shape[0] - 1
    for layer in range(n_layers):
        rows = neurons[starts[layer]:starts[layer + 1]]
        cols = neurons[starts[layer + 1]:starts[layer + 2]]
        row_order = _ascending(rows, full_widths[layer])
        col_order = _ascending(cols, full_widths[layer + 1])
        sorted_cols = cols[col_order]
        full_cols = full_widths[layer + 1]
        n_cols = sub_widths[layer + 1]
        fw = full_offsets[layer, W]
        sw = sub_offsets[layer, W]
        for i in range(rows.shape[0]):
            a = row_order[i]
            base = fw + rows[a] * full_cols
            row = sw + a * n_cols
            if to_full:
                for k in range(n_cols):
                    full[base + sorted_cols[k]] = sub[row + col_order[k]]
            else:
                for k in range(n_cols):
                    sub[row + col_order[k]] = full[base + sorted_cols[k]]
        for kind in range(B, BETA + 1):  # bias, gamma, beta: vectors
            if full_offsets[layer, kind] < 0:
                continue
            if to_full and skip_output_bias and kind == 1 and layer == n_layers - 1:
                continue
            fo = full_offsets[layer, kind]
            so = sub_offsets[layer, kind]
            for b in range(n_cols):
                if to_full:
                    full[fo + cols[b]] = sub[so + b]
                else:
                    sub[so + b] = full[fo + cols[b]]


@njit(cache=True, nogil=True)
def gather_subnet(full: np.ndarray, full_offsets: np.ndarray, full_widths: np.ndarray,
                  sub: np.ndarray, sub_offsets: np.ndarray, sub_widths: np.ndarray,
                  neurons: np.ndarray, starts: np.ndarray) -> None:
    """sub <- the subnet of ``full`` on the neuron ids ``neurons[starts[l]:starts[l+1]]`` of layer l.

    ``full``/``sub``: flat float vectors (one dtype) with layouts (``full_offsets``,
    ``full_widths``) and (``sub_offsets``, ``sub_widths``); ``neurons`` int64, all layers'
    ids concatenated; ``starts`` int64 (L+2,).
    """
    _copy_subnet(full, full_offsets, full_widths, sub, sub_offsets, sub_widths, neurons, starts, _OP[0], _OP[0])


@njit(cache=True, nogil=True)
def scatter_subnet(full: np.ndarray, full_offsets: np.ndarray, full_widths: np.ndarray,
                   sub: np.ndarray, sub_offsets: np.ndarray, sub_widths: np.ndarray,
                   neurons: np.ndarray, starts: np.ndarray, skip_output_bias: bool) -> None:
    """The inverse of ``gather_subnet``: write the subnet's values back by index.

    ``skip_output_bias`` leaves the last layer's bias alone: every worker holds it, so it is
    averaged by the coordinator rather than written by whichever worker comes last. Shapes as
    in ``gather_subnet``.
    """
    _copy_subnet(full, full_offsets, full_widths, sub, sub_offsets, sub_widths, neurons, starts, _OP[1],
                 skip_output_bias)


@njit(cache=True, nogil=True)
def take_block(matrix: np.ndarray, rows: np.ndarray, cols: np.ndarray, out: np.ndarray) -> None:
    """out[i * cols.size + k] <- matrix[rows[i], cols[k]]: a block of a weight matrix, row-major.

    ``matrix`` (R, C) C-contiguous float; ``rows``, ``cols`` int64 ids in any order (a row of
    the matrix is read whole from cache while its columns are picked); ``out`` 1-D, the
    matrix's dtype, at least rows.size * cols.size entries. What ``np.ix_`` indexing gives,
    without its temporaries (the partitioned server's pieces).
    """
    n = cols.shape[0]
    for i in range(rows.shape[0]):
        row = matrix[rows[i]]
        base = i * n
        for k in range(n):
            out[base + k] = row[cols[k]]


@njit(cache=True, nogil=True)
def put_block(matrix: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
    """matrix[rows[i], cols[k]] <- values[i * cols.size + k]: the inverse of ``take_block``
    (ids distinct within ``rows`` and within ``cols``; shapes and dtypes as there)."""
    n = cols.shape[0]
    for i in range(rows.shape[0]):
        row = matrix[rows[i]]
        base = i * n
        for k in range(n):
            row[cols[k]] = values[base + k]


@njit(cache=True, nogil=True)
def copy_block(src: np.ndarray, src_rows: np.ndarray, src_cols: np.ndarray,
               dst: np.ndarray, dst_rows: np.ndarray, dst_cols: np.ndarray) -> None:
    """dst[dst_rows[i], dst_cols[k]] <- src[src_rows[i], src_cols[k]]: ``take_block`` then
    ``put_block`` without the packed copy between them (a piece that stays in its process).

    ``src``, ``dst`` 2-D C-contiguous, one float dtype; the four id arrays int64, the two row
    (and the two column) arrays of one length; ids distinct within ``dst_rows`` and ``dst_cols``.
    """
    for i in range(src_rows.shape[0]):
        source = src[src_rows[i]]
        target = dst[dst_rows[i]]
        for k in range(src_cols.shape[0]):
            target[dst_cols[k]] = source[src_cols[k]]


@njit(cache=True, nogil=True)
def batch_norm_relu(z: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> None:
    """In place: z <- max(gamma * (z - mean) / sqrt(var + eps) + beta, 0), mean and (biased)
    var the batch's per-column statistics, accumulated in float64 in row order with the
    arithmetic of ``forward_logits`` (an owner's block of a hidden layer at evaluation).

    ``z`` (batch, width) C-contiguous float; ``gamma``, ``beta`` (width,) of its dtype.
    """
    batch, width = z.shape
    mean = np.zeros(width)
    for r in range(batch):
        zr = z[r]
        for j in range(width):
            mean[j] += zr[j]
    mean /= batch
    inv = np.zeros(width)
    for r in range(batch):
        zr = z[r]
        for j in range(width):
            diff = zr[j] - mean[j]
            inv[j] += diff * diff
    for j in range(width):
        inv[j] = 1.0 / np.sqrt(inv[j] / batch + BN_EPS)
    for r in range(batch):
        zr = z[r]
        for j in range(width):
            y = gamma[j] * ((zr[j] - mean[j]) * inv[j]) + beta[j]
            zr[j] = y if y > 0.0 else 0.0


# ----------------------------------------------------------------------------- BLAS
# ?gemm by symbol name (``kernels.blas`` binds the names; its import must come first): the
# Fortran ABI, every argument a pointer, 64-bit integers, column-major.
_GEMM_SIGNATURE = types.void(*([types.voidptr] * 13))
_SGEMM = types.ExternalFunction(blas.SYMBOLS[0], _GEMM_SIGNATURE)
_DGEMM = types.ExternalFunction(blas.SYMBOLS[1], _GEMM_SIGNATURE)
_NO_TRANS, _TRANS = 78, 84  # 'N', 'T'


@njit(cache=True, nogil=True)
def _gemm(a: np.ndarray, a_t: bool, b: np.ndarray, b_t: bool, c: np.ndarray, alpha: float, beta: float) -> None:
    """c <- alpha op(a) op(b) + beta c in place, one BLAS call (op transposes when ``a_t``/``b_t``).

    ``a``, ``b``, ``c``: 2-D, C-contiguous, one float dtype, c (M, N), op(a) (M, K), op(b) (K, N).
    With beta = 0, c is not read (BLAS semantics): it may hold anything.
    """
    if not (a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous):
        raise ValueError("_gemm: operands must be C-contiguous")
    rows, cols = c.shape
    if rows == 0 or cols == 0:
        return
    scalars = np.empty(2, dtype=c.dtype)
    scalars[0] = alpha
    scalars[1] = beta
    # row-major c is column-major c.T = op(b).T op(a).T: BLAS gets b first, leading dims = row lengths
    ints = np.empty(6, dtype=np.int64)
    ints[0] = cols
    ints[1] = rows
    ints[2] = a.shape[0] if a_t else a.shape[1]
    ints[3] = max(b.shape[1], 1)
    ints[4] = max(a.shape[1], 1)
    ints[5] = cols
    trans = np.empty(2, dtype=np.uint8)
    trans[0] = _TRANS if b_t else _NO_TRANS
    trans[1] = _TRANS if a_t else _NO_TRANS
    args = (trans[0:1].ctypes, trans[1:2].ctypes, ints[0:1].ctypes, ints[1:2].ctypes, ints[2:3].ctypes,
            scalars[0:1].ctypes, b.ctypes, ints[3:4].ctypes, a.ctypes, ints[4:5].ctypes, scalars[1:2].ctypes,
            c.ctypes, ints[5:6].ctypes)
    if c.itemsize == 4:
        _SGEMM(*args)
    else:
        _DGEMM(*args)


# ----------------------------------------------------------------------------- forward / backward
# What backward does with each parameter's gradient g: store it (``loss_and_grad``), or apply
# the optimizer at once (``train_steps`` on a dense model): plain SGD p <- p - lr g (for a
# weight matrix one GEMM with beta = 1 straight into the parameters), heavy ball
# v <- mu v + g (one GEMM with beta = mu into the velocity), p <- p - lr v.
STORE, SGD, HEAVY_BALL = 0, 1, 2


@njit(cache=True, nogil=True)
def _hidden_total(widths: np.ndarray) -> int:
    total = 0
    for layer in range(1, widths.shape[0] - 1):
        total += widths[layer]
    return total


@njit(cache=True, nogil=True)
def _workspace(params: np.ndarray, widths: np.ndarray, batch_norm: bool, batch: int):
    """``_forward``'s workspace for ``batch`` rows, in the dtype of ``params``: hidden
    activations (hidden*batch,), normalised values (hidden*batch,; empty without batch norm)
    and 1/std (hidden,)."""
    hidden = _hidden_total(widths)
    acts = np.empty(hidden * batch, dtype=params.dtype)
    xhats = np.empty(hidden * batch if batch_norm else 0, dtype=params.dtype)
    inv_stds = np.empty(hidden, dtype=params.dtype)
    return acts, xhats, inv_stds


@njit(cache=True, nogil=True)
def _forward(params: np.ndarray, offsets: np.ndarray, widths: np.ndarray, batch_norm: bool, scale: float,
             X: np.ndarray, acts: np.ndarray, xhats: np.ndarray, inv_stds: np.ndarray) -> np.ndarray:
    """Logits of the batch ``X``; hidden activations, normalised values and 1/std are kept for backward."""
    n_layers = widths.shape[0] - 1
    batch = X.shape[0]
    a_in = X
    hpos = 0
    for layer in range(n_layers):
        fan_in = widths[layer]
        fan_out = widths[layer + 1]
        wo = offsets[layer, W]
        bo = offsets[layer, B]
        weight = params[wo:wo + fan_in * fan_out].reshape((fan_in, fan_out))
        z = np.empty((batch, fan_out), dtype=params.dtype)
        bias = params[bo:bo + fan_out]
        for r in range(batch):  # row-major walks: arrays are (batch, width), C order
            zr = z[r]
            for j in range(fan_out):  # element by element: an array assigned to a slice would
                zr[j] = bias[j]  # compile numba's shape-mismatch message (string formatting, ~2 s)
        _gemm(a_in, _OP[0], weight, _OP[0], z, 1.0, 1.0)  # z = a_in W + b, the bias added by BLAS
        if layer == n_layers - 1:
            return z
        act = acts[hpos * batch:(hpos + fan_out) * batch].reshape((batch, fan_out))
        if batch_norm:
            xhat = xhats[hpos * batch:(hpos + fan_out) * batch].reshape((batch, fan_out))
            go = offsets[layer, GAMMA]
            beo = offsets[layer, BETA]
            # per-column statistics accumulated row by row, in float64, in row order. Inner
            # loops run over one row's view and per-column vectors (not offsets into the
            # flat parameters), which the compiler vectorises: same arithmetic, same order.
            mean = np.zeros(fan_out)
            for r in range(batch):
                zr = z[r]
                for j in range(fan_out):
                    mean[j] += zr[j]
            mean /= batch
            inv = np.zeros(fan_out)
            for r in range(batch):
                zr = z[r]
                for j in range(fan_out):
                    diff = zr[j] - mean[j]
                    inv[j] += diff * diff
            for j in range(fan_out):
                inv[j] = 1.0 / np.sqrt(inv[j] / batch + BN_EPS)
                inv_stds[hpos + j] = inv[j]
            gamma = params[go:go + fan_out]
            beta = params[beo:beo + fan_out]
            for r in range(batch):
                zr = z[r]
                xr = xhat[r]
                ar = act[r]
                for j in range(fan_out):
                    xh = (zr[j] - mean[j]) * inv[j]
                    xr[j] = xh
                    y = gamma[j] * xh + beta[j]
                    ar[j] = scale * y if y > 0.0 else 0.0
        else:
            for r in range(batch):
                zr = z[r]
                ar = act[r]
                for j in range(fan_out):
                    y = zr[j]
                    ar[j] = scale * y if y > 0.0 else 0.0
        a_in = act
        hpos += fan_out
    return a_in  # unreachable for n_layers >= 1


@njit(cache=True, nogil=True)
def forward_logits(params: np.ndarray, offsets: np.ndarray, widths: np.ndarray, batch_norm: bool, scale: float,
                   X: np.ndarray) -> np.ndarray:
    """Logits (batch, widths[-1]) of ``X`` (batch norm uses the statistics of ``X`` itself, as the
    original code did); ``scale`` float multiplies hidden activations."""
    acts, xhats, inv_stds = _workspace(params, widths, batch_norm, X.shape[0])
    return _forward(params, offsets, widths, batch_norm, scale, np.ascontiguousarray(X), acts, xhats, inv_stds)


@njit(cache=True, nogil=True)
def _apply(params: np.ndarray, out: np.ndarray, k: int, g: float, mode: int, lr: float, momentum: float) -> None:
    """One entry's gradient ``g``: stored in ``out`` (STORE) or applied to ``params[k]`` (``out``: the velocity)."""
    if mode == STORE:
        out[k] = g
    elif mode == SGD:
        params[k] -= lr * g
    else:
        v = momentum * out[k] + g
        out[k] = v
        params[k] -= lr * v


# Inlined into its two callers at numba's IR level: one LLVM module per caller is optimised and
# code-generated, not _step's own too, and again with it linked in (about 1 s less CPU in the
# first compile of train_steps); the same operations, so the same numbers.
@njit(cache=True, nogil=True, inline='always')
def _step(params: np.ndarray, offsets: np.ndarray, widths: np.ndarray, batch_norm: bool, scale: float,
          X: np.ndarray, y: np.ndarray, out: np.ndarray, mode: int, lr: float, momentum: float,
          acts: np.ndarray, xhats: np.ndarray, inv_stds: np.ndarray) -> float:
    """Forward and backward of one batch; the mean loss. Each layer's gradient goes where ``mode``
    says (``out``: the gradient for STORE, the velocity for HEAVY_BALL, unused for SGD) as soon as
    nothing later needs the old values: a weight after the error is propagated through it,
    gamma after the batch-norm backward has used it. ``acts``/``xhats``/``inv_stds``: workspace
    as ``_forward`` fills it."""
    n_layers = widths.shape[0] - 1
    batch = X.shape[0]
    hidden = _hidden_total(widths)
    logits = _forward(params, offsets, widths, batch_norm, scale, X, acts, xhats, inv_stds)

    classes = widths[n_layers]
    dz = np.empty((batch, classes), dtype=params.dtype)
    loss = softmax_xent(logits, y, dz)

    hpos = hidden
    for layer in range(n_layers - 1, -1, -1):
        fan_in = widths[layer]
        fan_out = widths[layer + 1]
        wo = offsets[layer, W]
        bo = offsets[layer, B]
        if layer > 0:
            hpos -= fan_in
            a_in = acts[hpos * batch:(hpos + fan_in) * batch].reshape((batch, fan_in))
        else:
            a_in = X
        weight = params[wo:wo + fan_in * fan_out].reshape((fan_in, fan_out))
        da = dz  # layer 0 needs no error below it
        if layer > 0:  # with the weights as they were: the error to the previous layer's output
            da = np.empty((batch, fan_in), dtype=params.dtype)
            _gemm(dz, _OP[0], weight, _OP[1], da, 1.0, 0.0)
        # the weight gradient a_in.T dz, never materialised apart from where it belongs
        if mode == STORE:
            _gemm(a_in, _OP[1], dz, _OP[0], out[wo:wo + fan_in * fan_out].reshape((fan_in, fan_out)), 1.0, 0.0)
        elif mode == SGD:
            _gemm(a_in, _OP[1], dz, _OP[0], weight, -lr, 1.0)
        else:
            _gemm(a_in, _OP[1], dz, _OP[0], out[wo:wo + fan_in * fan_out].reshape((fan_in, fan_out)), 1.0, momentum)
            for k in range(wo, wo + fan_in * fan_out):
                params[k] -= lr * out[k]
        bias_grad = np.zeros(fan_out)
        for r in range(batch):
            dzr = dz[r]
            for j in range(fan_out):
                bias_grad[j] += dzr[j]
        for j in range(fan_out):
            _apply(params, out, bo + j, bias_grad[j], mode, lr, momentum)
        if layer == 0:
            break
        if batch_norm:
            prev = layer - 1
            go = offsets[prev, GAMMA]
            beo = offsets[prev, BETA]
            xhat = xhats[hpos * batch:(hpos + fan_in) * batch].reshape((batch, fan_in))
            sum_dy = np.zeros(fan_in)
            sum_dy_xhat = np.zeros(fan_in)
            for r in range(batch):  # ReLU' and the column sums in one pass
                dar = da[r]
                ar = a_in[r]
                xr = xhat[r]
                for j in range(fan_in):
                    d = dar[j] * scale if ar[j] > 0.0 else 0.0
                    dar[j] = d
                    sum_dy[j] += d
                    sum_dy_xhat[j] += d * xr[j]
            coef = np.empty(fan_in, dtype=params.dtype)  # gamma * 1/std per column, in the params' dtype
            for j in range(fan_in):
                coef[j] = params[go + j] * inv_stds[hpos + j]
            for r in range(batch):
                dar = da[r]
                xr = xhat[r]
                for j in range(fan_in):
                    # dz = gamma*inv/B * (B*dy - sum(dy) - xhat*sum(dy*xhat))
                    dar[j] = coef[j] * (dar[j] - (sum_dy[j] + xr[j] * sum_dy_xhat[j]) / batch)
            for j in range(fan_in):
                _apply(params, out, go + j, sum_dy_xhat[j], mode, lr, momentum)
                _apply(params, out, beo + j, sum_dy[j], mode, lr, momentum)
        else:
            for r in range(batch):
                dar = da[r]
                ar = a_in[r]
                for j in range(fan_in):
                    if not ar[j] > 0.0:
                        dar[j] = 0.0
                    else:
                        dar[j] *= scale
        dz = da
    return loss


@njit(cache=True, nogil=True)
def loss_and_grad(params: np.ndarray, offsets: np.ndarray, widths: np.ndarray, batch_norm: bool, scale: float,
                  X: np.ndarray, y: np.ndarray, grad: np.ndarray) -> float:
    """Mean softmax cross-entropy (float) of the batch; its gradient w.r.t. ``params`` into
    ``grad[:size]`` (``grad``: flat, the dtype of ``params``; the rest of it is left alone)."""
    acts, xhats, inv_stds = _workspace(params, widths, batch_norm, X.shape[0])
    return _step(params, offsets, widths, batch_norm, scale, np.ascontiguousarray(X), y, grad, STORE, 0.0, 0.0,
                 acts, xhats, inv_stds)


# ----------------------------------------------------------------------------- update / training
@njit(cache=True, nogil=True)
def train_steps(X: np.ndarray, y: np.ndarray, batches: np.ndarray, params: np.ndarray, offsets: np.ndarray,
                widths: np.ndarray, batch_norm: bool, scale: float, lrs: np.ndarray, momentum: float,
                nesterov: bool, mask: np.ndarray, grad: np.ndarray, velocity: np.ndarray, size: int) -> float:
    """R = ``batches.shape[0]`` SGD steps on the rows ``batches[s]`` (int64 (R, batch)) of ``X``.

    ``X`` (n, widths[0]) and ``y`` int64 (n,); ``params``, ``grad``, ``velocity``: flat vectors of
    the dtype of ``X``, at least ``size`` long; step s uses learning rate ``lrs[s]`` (float64
    (R,): the schedule is the caller's); ``mask`` as in ``sgd_update``; ``scale``, ``momentum``:
    floats. Returns the mean batch loss.

    A dense model under plain SGD or heavy ball takes each step with the update fused into
    backward (``_step``): ``grad`` is not written. Nesterov (its update needs g and v) and a
    masked model (pruned entries must stay exactly 0) store the gradient in ``grad``, then
    ``sgd_update`` applies it.
    """
    steps = batches.shape[0]
    acts, xhats, inv_stds = _workspace(params, widths, batch_norm, batches.shape[1])
    fused = mask.shape[0] == 0 and not nesterov
    mode = STORE
    if fused:
        mode = SGD if momentum == 0.0 else HEAVY_BALL
    out = velocity if fused else grad  # where _step puts what it computes (lr, momentum unused by STORE)
    total = 0.0
    for step in range(steps):
        rows = batches[step]
        total += _step(params, offsets, widths, batch_norm, scale, X[rows], y[rows], out, mode, lrs[step], momentum,
                       acts, xhats, inv_stds)
        if not fused:
            sgd_update(params, grad, velocity, mask, size, lrs[step], momentum, nesterov)
    return total / max(steps, 1)


def _warms(*kernels: object):
    """Marks a warm-up function with the kernels it compiles (``kernels.cache`` reads it)."""
    def mark(function):
        function.kernels = kernels
        return function
    return mark


def _example(dtype: str) -> tuple:
    """A tiny batch-norm network and batch of ``dtype``: every warm-up calls a kernel with the
    argument types a run passes (the same specialisation, so the run loads it from the cache)."""
    from ist_cli.models.mlp import initial_params, net_layout

    np_dtype = np.dtype(dtype)
    layout = net_layout([3, 4, 2], True)
    params = initial_params(layout, 0, np_dtype)
    return layout, params, np.ones((2, 3), dtype=np_dtype), np.zeros(2, dtype=np.int64)


@_warms(train_steps, sgd_update)
def warm_up_training(dtype: str = "float32") -> None:
    """Compile (or load) ``train_steps`` for ``dtype``: what a worker that trains a replica or
    a subnet calls (``sgd_update`` is compiled with it)."""
    layout, params, X, y = _example(dtype)
    grad, velocity = np.zeros_like(params), np.zeros_like(params)
    train_steps(X, y, np.zeros((1, 2), dtype=np.int64), params, layout.offsets, layout.widths, True, 1.0,
                np.zeros(1), 0.9, True, np.ones_like(params), grad, velocity, layout.size)


@_warms(gather_subnet, scatter_subnet)
def warm_up_subnets(dtype: str = "float32") -> None:
    """Compile (or load) ``gather_subnet`` and ``scatter_subnet`` for ``dtype``: IST's."""
    layout, params, _, _ = _example(dtype)
    other = params.copy()
    neurons = np.array([0, 1, 2, 0, 1, 2, 3, 0, 1], dtype=np.int64)
    starts = np.array([0, 3, 7, 9], dtype=np.int64)
    w, o = layout.widths, layout.offsets
    gather_subnet(params, o, w, other, o, w, neurons, starts)
    scatter_subnet(params, o, w, other, o, w, neurons, starts, True)


@_warms(take_block, put_block, copy_block, batch_norm_relu)
def warm_up_pieces(dtype: str = "float32") -> None:
    """Compile (or load) the partitioned server's kernels for ``dtype``: its pieces' block
    copies and its owners' batch norm at evaluation (``models.sharded_forward``)."""
    np_dtype = np.dtype(dtype)
    matrix, other = np.ones((3, 4), dtype=np_dtype), np.zeros((3, 4), dtype=np_dtype)
    ids = np.arange(2, dtype=np.int64)
    take_block(matrix, ids, ids, other.ravel()[:4])
    put_block(matrix, ids, ids, other.ravel()[:4])
    copy_block(matrix, ids, ids, other, ids, ids)
    batch_norm_relu(other, matrix[0], matrix[1])


@_warms(forward_logits)
def warm_up_evaluation(dtype: str = "float32") -> None:
    """Compile (or load) ``forward_logits`` for ``dtype``: what the coordinator evaluates with."""
    layout, params, X, _ = _example(dtype)
    forward_logits(params, layout.offsets, layout.widths, True, 1.0, X)


@_warms(loss_and_grad, sgd_update)
def warm_up_gradient(dtype: str = "float32") -> None:
    """Compile (or load) ``loss_and_grad`` and ``sgd_update`` for ``dtype``: what a
    data-parallel worker calls (and its coordinator's update)."""
    layout, params, X, y = _example(dtype)
    grad = np.zeros_like(params)
    loss_and_grad(params, layout.offsets, layout.widths, True, 1.0, X, y, grad)
    sgd_update(params, grad, np.zeros_like(params), params[:0], layout.size, 0.0, 0.9, False)


@_warms(train_steps, sgd_update, gather_subnet, scatter_subnet, forward_logits)
def warm_up(dtype: str = "float32") -> None:
    """Compile (or load from the cache) the kernels of training, IST's subnets and evaluation for
    ``dtype`` (``loss_and_grad`` apart: ``warm_up_gradient``)."""
    warm_up_training(dtype)
    warm_up_subnets(dtype)
    warm_up_evaluation(dtype)
