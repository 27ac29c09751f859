r"""Exact solves for doubly symmetric stencils with mirror boundaries, through discrete cosine transforms.

The lecture notes diagonalise a periodic convolution with the FFT (Lars Ruthotto, *Numerical
Methods for Deep Learning*, "Parametric Models"); the same argument with mirror boundaries
gives cosine transforms. Let :math:`w` be a stencil with :math:`w_o = w_{-o}` on every axis
(:class:`structops.SymmetricConv`) and take one axis of :math:`n` samples.

* ``bc="reflect"`` (whole-sample mirror, :math:`\dots x_2\, x_1 \mid x_0\, x_1 \dots`) extends
  the signal evenly with period :math:`2(n-1)`. The even sequences
  :math:`v_k(i) = \cos(\pi k i / (n-1))` are mapped to multiples of themselves:
  :math:`\sum_o w_o \cos(\pi k (i - o)/(n-1)) = \lambda_k v_k(i)` (the sine terms cancel by the
  symmetry of :math:`w`), so DCT-I diagonalises :math:`K`.
* ``bc="symmetric"`` (half-sample mirror, :math:`\dots x_1\, x_0 \mid x_0\, x_1 \dots`) extends
  with period :math:`2n`; the eigenvectors are :math:`\cos(\pi k (i + \frac12)/n)`, DCT-II.

In :math:`d` dimensions the eigenvectors are tensor products and

.. math::
    \lambda_k = \sum_o w_o \prod_{a=1}^d \cos\Big(\frac{\pi k_a o_a}{L_a}\Big), \qquad
    L_a = n_a - 1 \text{ (DCT-I)}, \quad L_a = n_a \text{ (DCT-II)},

computed from the stencil in :math:`O(N \sum_a s_a)` by one small cosine matrix per axis
(:func:`cosine_symbol`). With :math:`C` the orthonormal transform (``scipy.fft.dctn(x,
type=t, norm="ortho")``):

* DCT-II: :math:`K = C^\top \Lambda C` -- :math:`K` is symmetric, and every function of
  :math:`K` and :math:`K^\top K = C^\top\Lambda^2 C` is the multiplier of the same function of
  :math:`\lambda`;
* DCT-I: :math:`K = B^{-1} C \Lambda C B` with :math:`C = C^\top = C^{-1}` and :math:`B` the
  diagonal (a tensor product over the axes) that is :math:`1/\sqrt2` on the first and last sample
  of each axis and 1 elsewhere (numpy's ``reflect`` folds the mirror image onto the second
  sample, so :math:`K` is not symmetric; it is self-adjoint in the inner product
  :math:`\langle x, y\rangle_{B^2}`). Then :math:`(K + \alpha I)^{-1} = B^{-1} C (\Lambda +
  \alpha)^{-1} C B` and its adjoint is :math:`B C (\Lambda + \alpha)^{-1} C B^{-1}`, but
  :math:`K^\top K = B S B^{-2} S B` (:math:`S = C\Lambda C`) is *not* diagonalised by
  :math:`C`: :func:`~structops.solvers.implicit_step` and ``normal=True`` need ``"symmetric"``.

:class:`structops.SymmetricConv` (one channel, stride 1) declares this through its
``diagonalize(theta)``, a :class:`~structops.kernels.diagonalized.CosineMultiplier`; every public
solver (:func:`structops.solvers.inverse`, :func:`~structops.solvers.implicit_step`,
:func:`~structops.solvers.eigvals`, ``svdvals``, ``spectral_norm``, ``cond``) takes the
``"cosine"`` route on it (:func:`structops.solvers.route`): there are no DCT-specific solvers.
The eigenvalues :math:`\lambda_k` are :func:`cosine_symbol` (``kernel.diagonalize(theta).multiplier``).
"""

from __future__ import annotations

from ..kernels.diagonalized import cosine_symbol

__all__ = ["cosine_symbol"]
