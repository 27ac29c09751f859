r"""The eager CPU path of :class:`~structops.CayleyConv`'s torch form on the numba kernels.

A plain eager call on CPU tensors (no ``torch.func`` transform, no tracing, no compile, no
double backward) of the Cayley torch form runs the same fused kernels as the numpy bridge
(:mod:`structops.kernels.conv._numba_fft`, :mod:`structops.kernels.conv._numba_gram`): each
transform writes (reads) the per-frequency rows ``(F, n, 2c)`` directly, and the inverse applies
the blocks inside its kernel, so none of the layout copies that torch's separate FFT and ``bmm``
calls need is made (benchmarks/README.md, "CayleyConv with numba FFTs (eighth session)": torch's
operations alone cost about 1.3× ``nn.Conv2d`` before those copies); float32 blocks come from
the bridge's resolvent kernel (:func:`cayley_factors`). Everything else -- the blocks' backward
in θ, transforms, compile, export, other devices, half precision, second derivatives -- stays on
torch's operations. ``structops.set_accelerator("numpy")`` (or no numba) keeps every path on
torch's operations.

The kernels order the half spectrum as ``rfftn`` does (C order of ``(H, W//2 + 1)``) and take
the blocks :math:`\hat K(\xi)` themselves; the torch form orders it with the halved axis first
and keeps right factors :math:`M = \hat K^\top` (``structops.torch._forms``). The two
conversions here (:func:`kernel_blocks`, and the reverse in :func:`backward`) move ``F c²``
numbers, against ``F n c`` for each of the copies they replace. They are numpy copies, on the
calling thread: a torch copy of this size runs on torch's threads, whose idle workers then spin
and take a core from the numba kernel that follows (the thread fights of ``docs/guide.md``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .._scratch import lease, workspace
from ..kernels.conv.cayley import fast_transforms, parseval_weights

__all__ = ["backward", "cayley_factors", "forward", "fusable"]

#: The real dtypes the kernels transform, as numpy's.
DTYPES: dict[torch.dtype, np.dtype] = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def fusable(x: torch.Tensor) -> bool:
    """Whether the kernels take ``x`` ``(n, c, H, W)`` (:func:`~structops.kernels.conv.cayley.fast_transforms`).

    Never while ``torch.jit.trace`` records (its check would see the kernels' outputs as constants).
    """
    dtype = DTYPES.get(x.dtype)
    return dtype is not None and x.ndim == 4 and not torch.jit.is_tracing() and fast_transforms(x.shape[2:], dtype)


def cayley_factors(theta: torch.Tensor, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``_forms._cayley_factors`` on the kernels: the right factors :math:`\hat K^\top` and :math:`R` ``(F, c, c)``.

    float32 ``theta`` only (as the numpy bridge): one parallel kernel sums the generator's
    spectrum from the taps' factors ``re``, ``im`` ``(T, F)`` and inverts :math:`I + \hat A`
    frequency by frequency, in float64 (:func:`~structops.kernels.conv._numba_resolvent.tap_resolvents`,
    whose stability note covers the elimination without pivoting); the results are rounded once
    to complex64. The first is a transposed view of the kernel's blocks.
    """
    from ..kernels.conv._numba_resolvent import tap_resolvents

    c = math.isqrt(theta.shape[0] // re.shape[0])
    taps = theta.detach().reshape(c, c, -1).numpy()
    resolvent, transform = tap_resolvents(taps, re.double().numpy(), im.double().numpy(), np.dtype(np.complex64))
    # R contiguous: the backward's R^H is then a conjugate transpose that BLAS reads in place
    return torch.from_numpy(transform).mT, torch.from_numpy(np.ascontiguousarray(resolvent.swapaxes(1, 2)))


def kernel_blocks(blocks: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    r"""The right factors ``blocks`` ``(F, c, c)`` (halved axis first) as the kernels' blocks :math:`\hat K = M^\top`.

    One numpy copy, which also resolves a conjugate view (the transpose's ``blocks.mH``).
    """
    H, W = grid
    c = blocks.shape[-1]
    conj = blocks.is_conj()
    src = (blocks.conj() if conj else blocks).detach().numpy().reshape(W // 2 + 1, H, c, c).transpose(1, 0, 3, 2)
    out = np.empty(src.shape, src.dtype)
    if conj:
        np.conjugate(src, out=out)
    else:
        np.copyto(out, src)
    return out.reshape(-1, c, c)


def forward(x: torch.Tensor, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`y = \mathrm{irfftn}(\mathrm{rfftn}(x) M)` and the rows of ``x`` (flat, real: the kernels' layout).

    ``x`` ``(n, c, H, W)``; ``blocks`` the right factors ``(F, c, c)`` in ``x``'s precision. The
    rows are in memory leased from :func:`structops._scratch.lease` for as long as the returned
    tensor lives (the autograd graph that keeps them, or not at all after a ``no_grad`` call), so
    they are not faulted in at every step.
    """
    from ..kernels.conv import _numba_fft

    x = x.detach().contiguous()
    n, c, H, W = x.shape
    rows = torch.from_numpy(np.asarray(lease((H * (W // 2 + 1), n, 2 * c), x.numpy().dtype)))
    y = torch.empty_like(x)
    _numba_fft.rfft2_rows(x.numpy(), rows.numpy())
    _numba_fft.irfft2_rows(rows.numpy(), (H, W), y.numpy(), kernel_blocks(blocks, (H, W)))
    return y, rows.view(-1)


@functools.lru_cache(maxsize=16)
def _kernel_weights(grid: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """:func:`~structops.kernels.conv.cayley.parseval_weights` in ``dtype``, built once per grid and precision."""
    return parseval_weights(grid).astype(dtype)


def backward(
    grad: torch.Tensor, blocks: torch.Tensor, rows_x: torch.Tensor, needs: tuple[bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r""":math:`\bar x = \mathrm{irfftn}(G M^H)` and the blocks' gradient :math:`\bar M = (w/N) X^H G`.

    Both in the torch form's order (the halved axis first). ``rows_x`` from :func:`forward`;
    :math:`G` the rows of ``grad``, in the calling thread's scratch
    (:func:`structops._scratch.workspace`). The kernels' Gram
    :math:`P = (w/N)\sum_n \hat x_n \hat g_n^H`
    (:func:`~structops.kernels.conv._numba_gram.pair_grams`) is :math:`\overline{\bar M}`
    frequency by frequency.
    """
    from ..kernels.conv import _numba_fft, _numba_gram

    grad = grad.detach().contiguous()
    n, c, H, W = grad.shape
    g = grad.numpy()
    rows = _numba_fft.rfft2_rows(g, workspace((H * (W // 2 + 1), n, 2 * c), g.dtype, "rows"))
    gx = None
    if needs[0]:
        gx = torch.empty_like(grad)
        _numba_fft.irfft2_rows(rows, (H, W), gx.numpy(), kernel_blocks(blocks, (H, W)), adjoint=True)
    if not needs[1]:
        return gx, None
    x_rows = rows_x.view(rows.shape).numpy()
    weights = _kernel_weights((H, W), grad.numpy().dtype)
    gram = _numba_gram.pair_grams(x_rows, rows, weights, np.result_type(rows.dtype, np.complex64))
    k_bar = np.conjugate(gram.reshape(H, W // 2 + 1, c, c).transpose(1, 0, 2, 3), order="C")  # one pass
    return gx, torch.from_numpy(k_bar).view(-1, c, c)
