"""Index grids and index tricks: mgrid, ogrid, r_, c_, indices, tril/triu/diag indices.

The grids' bounds are static (Python numbers), as in JAX: a slice ``a:b:n*1j`` means
``linspace(a, b, n)``, any other step means ``arange(a, b, step)``.

>>> import flamefx.numpy as fnp
>>> fnp.mgrid[0:2, 0:3].shape
(2, 2, 3)
>>> fnp.r_[1:3, 5, [7, 8]].tolist()
[1, 2, 5, 7, 8]
"""

from __future__ import annotations

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.concrete import concrete_scalar
from flamefx.numpy.creation import arange, array, linspace, meshgrid, shape_tuple
from flamefx.numpy.shape import concatenate, expand_dims, stack, transpose


def _grid_1d(s: slice, op_name: str):
    """The 1-D grid a slice stands for: linspace for a complex step (its magnitude is the
    number of points), arange otherwise."""
    start = concrete_scalar(s.start, f"slice start of {op_name}") or 0
    stop = concrete_scalar(s.stop, f"slice stop of {op_name}")
    step = concrete_scalar(s.step, f"slice step of {op_name}") or 1
    if isinstance(step, complex):
        return linspace(start, stop, int(abs(step)))
    return arange(start, stop, step)


class _Mgrid:
    """``mgrid[slices]``: dense coordinate grids stacked on a new leading axis.

    >>> mgrid[0:2, 0:2].tolist()
    [[[0, 0], [1, 1]], [[0, 1], [0, 1]]]
    """

    def __getitem__(self, key):
        if isinstance(key, slice):
            return _grid_1d(key, "mgrid")
        grids = meshgrid(*[_grid_1d(k, "mgrid") for k in key], indexing="ij")
        return stack(grids, 0) if grids else arange(0)


class _Ogrid:
    """``ogrid[slices]``: open (sparse) coordinate grids that broadcast against each other.

    >>> [g.shape for g in ogrid[0:2, 0:3]]
    [(2, 1), (1, 3)]
    """

    def __getitem__(self, key):
        if isinstance(key, slice):
            return _grid_1d(key, "ogrid")
        return meshgrid(*[_grid_1d(k, "ogrid") for k in key], indexing="ij", sparse=True)


class _AxisConcat:
    """``r_`` and ``c_``: slices, scalars and arrays joined along an axis, with NumPy's
    leading string directives ('r', 'c', or 'axis,ndmin,trans1d'). As in JAX, 'r' and 'c'
    give a 2-D array (a row or a column), not NumPy's ``np.matrix``."""

    def __init__(self, name: str, axis: int, ndmin: int, trans1d: int):
        self.name, self.axis, self.ndmin, self.trans1d = name, axis, ndmin, trans1d

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        axis, ndmin, trans1d, matrix = self.axis, self.ndmin, self.trans1d, -1
        if key and isinstance(key[0], str):
            directive, key = key[0], key[1:]
            if directive in ("r", "c"):
                matrix = 0 if directive == "r" else 1
            else:
                try:
                    values = [int(v) for v in directive.split(",")]
                except ValueError:
                    raise FlamefxValueError(f"{self.name}: directive {directive!r} is not 'r', "
                                            f"'c' or 'axis[,ndmin[,trans1d]]'") from None
                axis, ndmin, trans1d = (values + [ndmin, trans1d][len(values) - 1:])[:3]
        pieces = []
        for item in key:
            if isinstance(item, str):
                raise FlamefxValueError(f"{self.name}: a string directive must come first\n  "
                                        f"at {user_frame()}")
            piece = _grid_1d(item, self.name) if isinstance(item, slice) else array(item)
            item_ndim = 1 if isinstance(item, slice) else piece.ndim
            piece = array(piece, ndmin=ndmin)
            if trans1d != -1 and ndmin - item_ndim > 0:
                # NumPy moves the item's own axes to end at position trans1d.
                shift = ndmin - abs(ndmin + trans1d + 1) % ndmin
                order = tuple(range(ndmin))
                piece = transpose(piece, order[shift:] + order[:shift])
            pieces.append(piece)
        out = concatenate(pieces, axis=axis)
        if matrix != -1 and out.ndim == 1:
            out = expand_dims(out, matrix)
        return out

    def __len__(self):
        return 0


mgrid = _Mgrid()
ogrid = _Ogrid()
r_ = _AxisConcat("r_", axis=0, ndmin=1, trans1d=-1)
c_ = _AxisConcat("c_", axis=-1, ndmin=2, trans1d=0)


def indices(dimensions, dtype=None, sparse: bool = False):
    """The index of each position of a grid of shape ``dimensions``, one array per axis
    (stacked, or broadcastable ones with ``sparse``).

    >>> indices((2, 3)).shape
    (2, 2, 3)
    """
    dims = shape_tuple(dimensions)
    dtype = dtypes.canonicalize(dtype if dtype is not None else int)
    grids = []
    for i, d in enumerate(dims):
        shape = (1,) * i + (d,) + (1,) * (len(dims) - i - 1) if sparse else dims
        grids.append(lax.broadcast_in_dim(lax.iota(dtype, (d,), 0), shape, (i,)))
    if sparse:
        return tuple(grids)
    return stack(grids, 0) if grids else core.to_array(np.zeros((0,), dtype))


def _index_arrays(rows: np.ndarray, cols: np.ndarray) -> tuple:
    int_dtype = dtypes.default_int()
    return core.to_array(rows.astype(int_dtype)), core.to_array(cols.astype(int_dtype))


def tril_indices(n: int, k: int = 0, m: int | None = None) -> tuple:
    """The (row, column) indices of the lower triangle of an ``n`` x ``m`` matrix.

    >>> [i.tolist() for i in tril_indices(2)]
    [[0, 1, 1], [0, 0, 1]]
    """
    n, k = int(n), int(k)
    return _index_arrays(*np.tril_indices(n, k, n if m is None else int(m)))


def triu_indices(n: int, k: int = 0, m: int | None = None) -> tuple:
    """The (row, column) indices of the upper triangle of an ``n`` x ``m`` matrix.

    >>> [i.tolist() for i in triu_indices(2)]
    [[0, 0, 1], [0, 1, 1]]
    """
    n, k = int(n), int(k)
    return _index_arrays(*np.triu_indices(n, k, n if m is None else int(m)))


def _matrix_shape(arr, name: str) -> tuple:
    shape = core.get_aval(arr).shape
    if len(shape) != 2:
        raise FlamefxValueError(f"{name} needs a 2-D array, got shape {shape}\n  at "
                                f"{user_frame()}")
    return shape


def tril_indices_from(arr, k: int = 0) -> tuple:
    """``tril_indices`` for the shape of the 2-D array ``arr``.

    >>> import flamefx.numpy as fnp
    >>> [i.tolist() for i in tril_indices_from(fnp.ones((2, 3)), k=-1)]
    [[1], [0]]
    """
    n, m = _matrix_shape(arr, "tril_indices_from")
    return tril_indices(n, k, m)


def triu_indices_from(arr, k: int = 0) -> tuple:
    """``triu_indices`` for the shape of the 2-D array ``arr``.

    >>> import flamefx.numpy as fnp
    >>> [i.tolist() for i in triu_indices_from(fnp.ones((2, 3)), k=2)]
    [[0], [2]]
    """
    n, m = _matrix_shape(arr, "triu_indices_from")
    return triu_indices(n, k, m)


def diag_indices(n: int, ndim: int = 2) -> tuple:
    """The indices of the main diagonal of an ``ndim``-dimensional array of side ``n``.

    >>> [i.tolist() for i in diag_indices(2)]
    [[0, 1], [0, 1]]
    """
    n, ndim = int(n), int(ndim)
    if n < 0 or ndim < 0:
        raise FlamefxValueError(f"diag_indices needs n >= 0 and ndim >= 0, got n={n}, "
                                f"ndim={ndim}")
    return (arange(n),) * ndim
