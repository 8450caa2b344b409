"""Numba kernels at the two ends of every network's SGD step, whatever its layers: the softmax
cross-entropy loss that starts the backward pass, and the SGD / momentum / Nesterov update of
the flat parameter vector (optionally masked) that ends the step. The MLP kernels
(``kernels.mlp``) and the layer-spec driver (``models.network_driver``) both call these, so the
two architectures share one loss and one update, bit for bit.

Shapes and dtypes: float arrays of one dtype (float32 or float64), C-contiguous; class ids
int64. Callers outside this package pass arguments by keyword.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def softmax_xent(logits: np.ndarray, y: np.ndarray, dlogits: np.ndarray) -> float:
    """Mean softmax cross-entropy of ``logits`` (N, K) against class ids ``y`` int64 (N,);
    dlogits (N, K, the dtype of logits) <- its gradient (softmax - one-hot) / N. Returns the
    loss (float). Each row is shifted by its maximum, so large logits do not overflow."""
    N, K = logits.shape
    loss = 0.0
    for r in range(N):
        top = logits[r, 0]
        for k in range(1, K):
            if logits[r, k] > top:
                top = logits[r, k]
        total = 0.0
        for k in range(K):
            total += np.exp(logits[r, k] - top)
        log_total = np.log(total)
        loss += log_total + top - logits[r, y[r]]
        for k in range(K):
            dlogits[r, k] = np.exp(logits[r, k] - top - log_total) / N
        dlogits[r, y[r]] -= 1.0 / N
    return loss / N


@njit(cache=True, nogil=True)
def sgd_update(params: np.ndarray, grad: np.ndarray, velocity: np.ndarray, mask: np.ndarray, size: int,
               lr: float, momentum: float, nesterov: bool) -> None:
    """PyTorch's SGD on the first ``size`` entries of the float vectors ``params``, ``grad``, ``velocity``.

    v <- mu v + g; heavy ball: p <- p - lr v; Nesterov: p <- p - lr (g + mu v); plain SGD
    (p <- p - lr g, velocity untouched) when mu = 0. ``mask`` (same dtype, 0/1, length
    >= ``size``, or empty for a dense model) marks pruned entries with 0: their gradient and
    velocity are multiplied by it (exactly 0) and the parameter moves by lr * 0, so a pruned
    weight that starts at 0 stays exactly 0; kept entries get the dense update bit for bit.
    """
    if mask.shape[0] > 0:  # one branch-free pass: a pruned entry's g and v become 0, p - lr*0 = p
        if momentum == 0.0:
            for k in range(size):
                g = grad[k] * mask[k]
                grad[k] = g
                params[k] -= lr * g
        elif nesterov:
            for k in range(size):
                g = grad[k] * mask[k]
                grad[k] = g
                v = (momentum * velocity[k] + g) * mask[k]
                velocity[k] = v
                params[k] -= lr * (g + momentum * v)
        else:
            for k in range(size):
                g = grad[k] * mask[k]
                grad[k] = g
                v = (momentum * velocity[k] + g) * mask[k]
                velocity[k] = v
                params[k] -= lr * v
    elif momentum == 0.0:
        for k in range(size):
            params[k] -= lr * grad[k]
    elif nesterov:
        for k in range(size):
            v = momentum * velocity[k] + grad[k]
            velocity[k] = v
            params[k] -= lr * (grad[k] + momentum * v)
    else:
        for k in range(size):
            v = momentum * velocity[k] + grad[k]
            velocity[k] = v
            params[k] -= lr * v


def warm_up(dtype: str = "float32") -> None:
    """Compile (or load from the cache) both kernels for ``dtype`` (a worker calls this before
    its first step, so no step pays for compilation)."""
    np_dtype = np.dtype(dtype)
    logits = np.zeros((2, 3), dtype=np_dtype)
    softmax_xent(logits=logits, y=np.zeros(2, dtype=np.int64), dlogits=np.empty_like(logits))
    params = np.zeros(4, dtype=np_dtype)
    sgd_update(params=params, grad=np.zeros_like(params), velocity=np.zeros_like(params), mask=params[:0],
               size=4, lr=0.0, momentum=0.9, nesterov=False)
