"""Synthetic test problems for deblurring: a piecewise-constant phantom and a Gaussian blur stencil.

Used by ``examples/deblur.py``, ``benchmarks/bench_preconditioners.py`` and the solver tests,
so that they all blur the same image with the same stencil.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_number, check_positive_int

__all__ = ["anisotropic_gaussian_stencil", "gaussian_stencil", "phantom"]


def phantom(size: int, *, ring: bool = True) -> np.ndarray:
    r"""Piecewise-constant ``size × size`` test image: a disc, a square, a bar and a small ring.

    With :math:`(x, y) = (j, i) / \text{size}` for pixel :math:`(i, j)` the image is ``0.1``
    on the background and

    - ``0.8`` on the disc :math:`(x - 0.35)^2 + (y - 0.4)^2 < 0.2^2`,
    - ``0.5`` on the square :math:`|x - 0.7| < 0.12,\ |y - 0.65| < 0.12`,
    - ``1.0`` on the bar :math:`|x - 0.5| < 0.4,\ |y - 0.88| < 0.03`,
    - ``0.9`` on the ring :math:`0.06^2 < (x - 0.75)^2 + (y - 0.2)^2 < 0.1^2` (if ``ring``),

    each painted over the previous ones. Its edges are what a blur destroys and a good
    deconvolution restores; the thin ring is the finest detail.

    Parameters
    ----------
    size : int
        Side of the image in pixels, ``>= 1``.
    ring : bool, optional
        Paint the thin ring (default). ``False`` gives the image without it.

    Returns
    -------
    numpy.ndarray, shape (size, size), float64

    Raises
    ------
    TypeError
        If ``size`` is not an integer.
    ValueError
        If ``size < 1``.

    Examples
    --------
    >>> img = phantom(64)
    >>> img.shape, float(img.min()), float(img.max())
    ((64, 64), 0.1, 1.0)
    >>> np.unique(phantom(64)).tolist(), np.unique(phantom(64, ring=False)).tolist()
    ([0.1, 0.5, 0.8, 0.9, 1.0], [0.1, 0.5, 0.8, 1.0])
    """
    n = check_positive_int(size, "size")
    yy, xx = np.mgrid[0:n, 0:n] / n
    img = 0.1 * np.ones((n, n))
    img[(xx - 0.35) ** 2 + (yy - 0.4) ** 2 < 0.2**2] = 0.8
    img[(np.abs(xx - 0.7) < 0.12) & (np.abs(yy - 0.65) < 0.12)] = 0.5
    img[(np.abs(xx - 0.5) < 0.4) & (np.abs(yy - 0.88) < 0.03)] = 1.0
    if ring:
        r2 = (xx - 0.75) ** 2 + (yy - 0.2) ** 2
        img[(r2 < 0.1**2) & (r2 > 0.06**2)] = 0.9
    return img


def gaussian_stencil(size: int, sigma: float, ndim: int = 2) -> np.ndarray:
    r"""Normalised Gaussian blur stencil of side ``size`` in ``ndim`` dimensions.

    .. math::

        g_j = \frac{\exp\!\left(-\lVert j - c\rVert^2 / (2\sigma^2)\right)}
                   {\sum_k \exp\!\left(-\lVert k - c\rVert^2 / (2\sigma^2)\right)},
        \qquad j \in \{0, \dots, \text{size} - 1\}^{\text{ndim}},\ c = \lfloor \text{size}/2 \rfloor,

    so the entries sum to one and the centre is the ``structops.Conv`` centre ``s // 2``.
    ``gaussian_stencil(s, σ).ravel()`` is a θ for ``Conv(grid, (s, s))``.

    Parameters
    ----------
    size : int
        Side of the stencil, ``>= 1``.
    sigma : float
        Standard deviation in pixels, ``> 0``.
    ndim : int, optional
        Number of axes (default 2).

    Returns
    -------
    numpy.ndarray, shape (size,) * ndim, float64

    Raises
    ------
    TypeError
        If ``size`` or ``ndim`` is not an integer or ``sigma`` is not a real number.
    ValueError
        If ``size < 1``, ``ndim < 1`` or ``sigma`` is not finite and positive.

    Examples
    --------
    >>> g = gaussian_stencil(5, 1.0)
    >>> g.shape, bool(np.isclose(g.sum(), 1.0)), bool(g[2, 2] == g.max())
    ((5, 5), True, True)
    >>> g1 = gaussian_stencil(5, 1.0, ndim=1)
    >>> bool(np.allclose(np.outer(g1, g1), g))
    True
    """
    size = check_positive_int(size, "size")
    ndim = check_positive_int(ndim, "ndim")
    sigma = check_number(sigma, "sigma", above=0)
    r = np.arange(size) - size // 2
    r2 = sum(r.reshape((size,) + (1,) * (ndim - 1 - axis)) ** 2 for axis in range(ndim))
    g = np.exp(-r2 / (2 * sigma**2))
    return g / g.sum()


def anisotropic_gaussian_stencil(size: int, sigmas: tuple[float, float], degrees: float = 0.0) -> np.ndarray:
    r"""Normalised 2-D Gaussian blur stencil with standard deviations ``sigmas``, rotated by ``degrees``.

    .. math::

        g_j \propto \exp\!\left(-\frac{u_j^2}{2\sigma_1^2} - \frac{v_j^2}{2\sigma_2^2}\right),\qquad
        \begin{pmatrix} u_j \\ v_j \end{pmatrix} =
        \begin{pmatrix} \cos t & \sin t \\ -\sin t & \cos t \end{pmatrix}
        \begin{pmatrix} j_2 - c \\ j_1 - c \end{pmatrix},

    with :math:`c = \lfloor \text{size}/2 \rfloor` and :math:`t` the angle in radians. Not
    doubly symmetric unless ``degrees`` is a multiple of 90 (or the sigmas are equal): the
    test case of a mirrored-boundary blur that no cosine transform diagonalises.

    Parameters
    ----------
    size : int
        Side of the stencil, ``>= 1``.
    sigmas : (float, float)
        Standard deviations along the rotated axes, ``> 0``.
    degrees : float, optional
        Rotation angle (default 0).

    Returns
    -------
    numpy.ndarray, shape (size, size), float64, summing to one

    Examples
    --------
    >>> g = anisotropic_gaussian_stencil(15, (3.0, 1.0), 30)
    >>> g.shape, bool(np.isclose(g.sum(), 1.0)), bool(np.allclose(g, g[::-1, ::-1]))
    ((15, 15), True, True)
    >>> bool(np.allclose(anisotropic_gaussian_stencil(5, (1.0, 1.0), 30), gaussian_stencil(5, 1.0)))
    True
    """
    size = check_positive_int(size, "size")
    s1, s2 = (check_number(s, "sigmas", above=0) for s in sigmas)
    t = np.deg2rad(check_number(degrees, "degrees"))
    c = np.arange(size) - size // 2
    Y, X = np.meshgrid(c, c, indexing="ij")
    u, v = np.cos(t) * X + np.sin(t) * Y, -np.sin(t) * X + np.cos(t) * Y
    g = np.exp(-(u**2) / (2 * s1**2) - v**2 / (2 * s2**2))
    return g / g.sum()
