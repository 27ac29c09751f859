"""Validation of user input shared by every public entry point.

Every check raises :class:`ValueError` or :class:`TypeError` whose message names the
argument, shows what it got and says what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from ._backend import total
from ._integers import check_optional_int as check_optional_int  # the integer rules live below _backend
from ._integers import check_positive_int as check_positive_int

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(a, name: str, dtype: np.dtype | None = None, source: str = "theta") -> np.ndarray:
    """Return ``a`` as a float32/float64 array, casting integers, rejecting other dtypes.

    With ``dtype`` given, a floating array of another precision is an error (nothing is
    silently up- or down-cast; ``source`` names the argument that set the precision); integer
    input is cast to ``dtype``.
    """
    arr = np.asarray(a)
    kind = arr.dtype.kind
    if kind in "iu":
        arr = arr.astype(dtype if dtype is not None else np.float64)
    elif arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"`{name}` must be a real float32 or float64 array, got dtype {arr.dtype}.")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise TypeError(
            f"`{name}` has dtype {arr.dtype} but the computation runs in "
            f"{np.dtype(dtype)} (the dtype of `{source}`); pass both in the same precision, "
            f"e.g. `{name}.astype(np.{np.dtype(dtype)})`."
        )
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if ``arr`` holds NaN or Inf, naming the first bad index."""
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        where = ", ".join(str(int(i)) for i in bad)
        raise ValueError(f"`{name}` must be finite, but {name}[{where}] = {arr[tuple(bad)].item()!r}.")


def check_finite_fast(arr: np.ndarray, name: str) -> None:
    """:func:`check_finite` at the cost of one summing pass over ``arr``.

    NaN and Inf propagate through a sum (``inf + -inf`` is NaN), so a finite sum proves every
    entry finite; only a non-finite sum (bad entries, or finite ones that overflow) pays for
    the exact scan that locates the culprit.
    """
    flat = np.ravel(arr)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(total(flat)):
            return
    check_finite(arr, name)


def check_theta(theta, nparams: int, name: str = "theta", shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Validate a parameter vector: real float, length ``nparams``, finite.

    1-D, or of the family's natural ``shape`` (flattened C-order, e.g. a convolution's weight
    array); any other shape is an error, never silently reshaped.

    Integers are cast to float64; float32 and float64 are kept as they are.

    Examples
    --------
    >>> check_theta([1, 2], 2)
    array([1., 2.])
    >>> check_theta([1.0, float("nan")], 2)
    Traceback (most recent call last):
    ...
    ValueError: `theta` must be finite, but theta[1] = nan.
    """
    arr = as_float_array(theta, name)
    if arr.ndim != 1:
        natural = shape is not None and len(shape) > 1 and arr.shape == tuple(shape)
        if not natural:
            hint = f" or an array of shape {tuple(shape)}" if shape is not None and len(shape) > 1 else ""
            raise ValueError(
                f"`{name}` must be a vector of length {nparams}{hint}, got an array of shape {arr.shape} "
                "(flatten it yourself in the family's documented order: nothing is reshaped silently)."
            )
        arr = arr.reshape(-1)
    if arr.shape[0] != nparams:
        raise ValueError(f"`{name}` must have length nparams = {nparams}, got length {arr.shape[0]}.")
    check_finite(arr, name)
    return arr


def check_batch(x, example_shape: Sequence[int], dtype: np.dtype, name: str = "X", source: str = "theta") -> np.ndarray:
    """Validate a batch of examples and return it as an ``(n, prod(example_shape))`` array.

    Accepts ``(n, *example_shape)`` or ``(n, prod(example_shape))``; the dtype must be
    ``dtype`` (integers are cast to it); NaN and Inf are rejected (:func:`check_finite_fast`).

    Examples
    --------
    >>> check_batch(np.zeros((5, 2, 3)), (2, 3), np.float64).shape
    (5, 6)
    >>> check_batch(np.zeros((5, 4), np.float32), (3,), np.float32)
    Traceback (most recent call last):
    ...
    ValueError: `X` must hold examples along its first axis with shape (n, 3), got shape (5, 4).
    """
    arr = as_float_array(x, name, dtype=dtype, source=source)
    example_shape = tuple(int(s) for s in example_shape)
    size = int(np.prod(example_shape))
    if arr.ndim >= 1 and (arr.shape[1:] == example_shape or (arr.ndim == 2 and arr.shape[1] == size)):
        check_finite_fast(arr, name)
        return arr.reshape(arr.shape[0], size)
    expected = f"(n, {', '.join(map(str, example_shape))})"
    if len(example_shape) > 1:
        expected += f" or (n, {size})"
    raise ValueError(f"`{name}` must hold examples along its first axis with shape {expected}, got shape {arr.shape}.")


def is_grid_of(shape: Sequence[int], example_shape: Sequence[int]) -> bool:
    """Whether ``shape`` is the grid alone of a one-channel example of shape ``example_shape = (1, *grid)``.

    A one-channel image may be given without its channel axis (``(H, W)`` for ``(1, H, W)``);
    the result then drops it too where the output has one channel (:func:`grid_output_shape`).

    Examples
    --------
    >>> is_grid_of((8, 8), (1, 8, 8)), is_grid_of((8, 8), (2, 8, 8)), is_grid_of((8,), (8,))
    (True, False, False)
    """
    example_shape = tuple(example_shape)
    return len(example_shape) > 1 and example_shape[0] == 1 and tuple(shape) == example_shape[1:]


def grid_output_shape(out_shape: Sequence[int]) -> tuple[int, ...]:
    """The output's shape for a grid-shaped input (:func:`is_grid_of`): its grid alone when it has one channel.

    Examples
    --------
    >>> grid_output_shape((1, 6, 6)), grid_output_shape((3, 6, 6))
    ((6, 6), (3, 6, 6))
    """
    out_shape = tuple(out_shape)
    return out_shape[1:] if len(out_shape) > 1 and out_shape[0] == 1 else out_shape


def check_flag(value, name: str) -> bool:
    """Return ``value`` as a bool; anything but True/False (e.g. the string ``"no"``) is an error.

    Examples
    --------
    >>> check_flag(True, "transpose")
    True
    >>> check_flag("no", "transpose")
    Traceback (most recent call last):
    ...
    TypeError: `transpose` must be True or False, got 'no'.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_number(
    value, name: str, *, minimum: float | None = None, above: float | None = None, below: float | None = None
) -> float:
    """Return ``value`` as a float: a finite real number ``>= minimum``, ``> above``, ``< below`` (those given).

    One message states the whole requirement, NaN included; booleans are not numbers.

    Examples
    --------
    >>> check_number(0.5, "momentum", minimum=0, below=1)
    0.5
    >>> check_number(float("nan"), "lr", above=0)
    Traceback (most recent call last):
    ...
    ValueError: `lr` must be a finite number > 0, got nan.
    >>> check_number(1.0, "beta1", minimum=0, below=1)
    Traceback (most recent call last):
    ...
    ValueError: `beta1` must be a finite number >= 0 and < 1, got 1.0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    number = float(value)
    bounds = [(minimum, ">=", np.greater_equal), (above, ">", np.greater), (below, "<", np.less)]
    given = [(limit, text, holds) for limit, text, holds in bounds if limit is not None]
    if not np.isfinite(number) or not all(holds(number, limit) for limit, _, holds in given):
        wanted = " and ".join(f"{text} {limit:g}" for limit, text, _ in given)
        raise ValueError(f"`{name}` must be a finite number{' ' + wanted if wanted else ''}, got {value!r}.")
    return number


def check_choice(value, name: str, choices: Sequence) -> str:
    """Return ``value`` if it is one of ``choices``, else a ``ValueError`` listing them.

    Examples
    --------
    >>> check_choice("tanh", "activation", ("relu", "tanh"))
    'tanh'
    >>> check_choice("gelu", "activation", ("relu", "tanh"))
    Traceback (most recent call last):
    ...
    ValueError: `activation` must be one of ('relu', 'tanh'), got 'gelu'.
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)!r}, got {value!r}.")
    return value


def check_int_tuple(value, name: str, ndim: int | None = None, minimum: int = 1) -> tuple[int, ...]:
    """Return ``value`` (an int or a sequence of ints) as a tuple, each entry ``>= minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if ndim is None:
            raise TypeError(f"`{name}` must be a sequence of integers, got {value!r}.")
        value = (value,) * ndim
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an integer or a sequence of integers, got {value!r}.") from None
    if ndim is not None and len(items) != ndim:
        raise ValueError(f"`{name}` must have {ndim} entries (one per axis), got {value!r}.")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise TypeError(f"`{name}` must hold integers, got {value!r}.")
        if item < minimum:
            raise ValueError(f"every entry of `{name}` must be >= {minimum}, got {value!r}.")
    return tuple(int(i) for i in items)
