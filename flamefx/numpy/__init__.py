"""flamefx.numpy: NumPy's API on flamefx arrays, differentiable and traceable.

Every function is written out on flamefx.lax, promoting dtypes (JAX's lattice, weak Python
scalars) and broadcasting shapes explicitly before binding the strict primitives.

>>> import flamefx.numpy as fnp
>>> x = fnp.arange(6.0).reshape(2, 3)
>>> fnp.sum(x * 2, axis=1).tolist()
[6.0, 24.0]
"""
# ruff: noqa: F401  (this module re-exports)

from flamefx.core import Array as ndarray
from flamefx.numpy import linalg  # fnp.linalg.norm
from flamefx.numpy import fft  # noqa: F401  (fnp.fft.fft, rfft, fftfreq, ...)
from flamefx.numpy.array_api import __array_api_version__, __array_namespace_info__
from flamefx.numpy.creation import (arange, array, asarray, copy, empty, empty_like, eye,
                                    from_dlpack, full, full_like, geomspace, identity, linspace,
                                    logspace, meshgrid, ones, ones_like, tri, tril, triu, zeros,
                                    zeros_like)
from flamefx.numpy.einsum import einsum, vecdot
from flamefx.numpy.histograms import (bincount, digitize, histogram, histogram2d,
                                      histogram_bin_edges, histogramdd)
from flamefx.numpy.index_tricks import (c_, diag_indices, indices, mgrid, ogrid, r_,
                                        tril_indices, tril_indices_from, triu_indices,
                                        triu_indices_from)
from flamefx.numpy.indexing import (_getitem, _IndexUpdateHelper, argwhere, flatnonzero, nonzero,
                                    put_along_axis, ravel_multi_index, select, take,
                                    take_along_axis, unravel_index)
from flamefx.numpy.linalg import dot, inner, matmul, outer, tensordot, vdot
from flamefx.numpy.logic import (bitwise_and, bitwise_not, bitwise_or, bitwise_xor, equal,
                                 greater, greater_equal, invert, isfinite, isinf, isnan, less,
                                 less_equal, logical_and, logical_not, logical_or, logical_xor,
                                 not_equal)
from flamefx.numpy.matrices import cross, diag, diagflat, diagonal, kron, trace, vander
from flamefx.numpy.math import (abs, absolute, add, arccos, arcsin, arctan, arctan2, around, cbrt,
                                ceil, clip, cos, cosh, divide, exp, exp2, expm1, fix, float_power,
                                floor, floor_divide, fmod, hypot, log, log1p, log2, log10,
                                logaddexp, maximum, minimum, mod, multiply, nan_to_num, negative,
                                positive, power, reciprocal, remainder, rint, round, sign, sin,
                                sinh, sqrt, square, subtract, tan, tanh, true_divide, trunc, where)
from flamefx.numpy.logic import (allclose, array_equal, array_equiv, bitwise_invert,
                                 bitwise_left_shift, bitwise_right_shift, isclose, left_shift,
                                 right_shift, signbit)
from flamefx.numpy.math import (acos, asin, atan, atan2, copysign, fabs, fmax, fmin, logaddexp2,
                                nextafter, pow)
from flamefx.numpy.complex_numbers import (angle, conj, conjugate, imag, iscomplex, iscomplexobj,
                                           isreal, isrealobj, real)
from flamefx.numpy.transcendental import (acosh, arccosh, arcsinh, arctanh, asinh, atanh, deg2rad,
                                          degrees, rad2deg, radians, sinc)
from flamefx.numpy.scalar_types import (bfloat16, bool, bool_, can_cast, cdouble, complex64,
                                        complex128, complex_, complexfloating, csingle, double,
                                        dtype, finfo, float16, float32, float64, float_, floating,
                                        generic, iinfo, inexact, int8, int16, int32, int64, int_,
                                        integer, isdtype, isscalar, issubdtype, number,
                                        signedinteger, single, uint, uint8, uint16, uint32,
                                        uint64, unsignedinteger)
from flamefx.numpy.promotion import (broadcast_arrays, broadcast_shapes, broadcast_to,
                                     promote_types, result_type)
from flamefx.numpy.reductions import (all, amax, amin, any, argmax, argmin, cumprod, cumsum,
                                      logsumexp, max, mean, min, prod, std, sum, var)
from flamefx.numpy.signal import (convolve, correlate, cumulative_prod, cumulative_sum, diff,
                                  ediff1d, gradient, interp, polyadd, polyder, polyfit, polyint,
                                  polymul, polysub, polyval, trapezoid)
from flamefx.numpy.statistics import (average, corrcoef, count_nonzero, cov, median,
                                      nanargmax, nanargmin, nancumprod, nancumsum, nanmax,
                                      nanmean, nanmedian, nanmin, nanpercentile, nanprod,
                                      nanquantile, nanstd, nansum, nanvar, percentile, ptp,
                                      quantile)
from flamefx.numpy.shape import (array_split, astype, atleast_1d, atleast_2d, atleast_3d, block,
                                 column_stack, concat, concatenate, dsplit, dstack, expand_dims,
                                 flip, fliplr, flipud, hsplit, hstack, matrix_transpose, moveaxis,
                                 ndim, pad, permute_dims, ravel, repeat, reshape, roll, rollaxis,
                                 rot90, row_stack, shape, size, split, squeeze, stack, swapaxes,
                                 tile, transpose, unstack, vsplit, vstack)
from flamefx.numpy.splicing import append, delete, insert
from flamefx.numpy.vectorize import apply_along_axis, apply_over_axes, vectorize
from flamefx.numpy.sorting import (argpartition, argsort, lexsort, partition, searchsorted,
                                    sort, sort_complex)
from flamefx.numpy.setops import (intersect1d, isin, setdiff1d, setxor1d, union1d, unique,
                                   unique_all, unique_counts, unique_inverse, unique_values)

pi = 3.141592653589793
e = 2.718281828459045
inf = float("inf")
nan = float("nan")
newaxis = None
