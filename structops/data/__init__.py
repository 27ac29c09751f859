"""Data files shipped with structops (no network, no scikit-learn needed at run time).

``digits.npz``
    The 8×8 handwritten digits of scikit-learn's :func:`sklearn.datasets.load_digits`:
    1,797 grey-level images with integer pixels in ``0..16`` (``images``, uint8, shape
    ``(1797, 8, 8)``) and their classes ``0..9`` (``labels``, uint8, shape ``(1797,)``).
    Source: the test set of the UCI "Optical Recognition of Handwritten Digits" data set
    (E. Alpaydin and C. Kaynak, 1998), https://archive.ics.uci.edu/dataset/80, licensed under
    Creative Commons Attribution 4.0 (CC BY 4.0). Generated once with
    ``np.savez_compressed("digits.npz", images=d.images.astype(np.uint8),
    labels=d.target.astype(np.uint8))`` from ``d = sklearn.datasets.load_digits()``.

Synthetic deblurring problems (:mod:`structops.data.synthetic`): :func:`phantom`, a
piecewise-constant test image, and :func:`gaussian_stencil`, a normalised Gaussian blur.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .synthetic import anisotropic_gaussian_stencil, gaussian_stencil, phantom

__all__ = ["anisotropic_gaussian_stencil", "data_path", "gaussian_stencil", "phantom"]


def data_path(name: str) -> Path:
    """Path of a shipped data file, e.g. ``data_path("digits.npz")``.

    Raises
    ------
    FileNotFoundError
        If the file is not part of the installation (a broken install without package data).
    """
    path = Path(str(resources.files(__name__) / name))
    if not path.is_file():
        raise FileNotFoundError(
            f"structops data file {name!r} is missing from the installation (looked at {path}); "
            "reinstall structops with its package data (setup.cfg [options.package_data])."
        )
    return path
