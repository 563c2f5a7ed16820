"""flamefx.lax: the strict lax-level operations, one name per primitive, and control flow.

Unlike flamefx.numpy, nothing here broadcasts or promotes: binary operations want equal
shapes and dtypes. Each name is defined next to its primitive's declaration in
flamefx/primitives/ and re-exported here.

>>> import numpy as np
>>> from flamefx import lax
>>> lax.add(np.float32(1.0), np.float32(2.0)).item()
3.0
"""

# ruff: noqa: F401  (this module re-exports)

# --- primitives: elementwise -------------------------------------------------------------------
from flamefx.primitives.elementwise import (
    abs, acos, acosh, add, asin, asinh, atan, atan2, atanh, bitwise_and, bitwise_not, bitwise_or,
    bitwise_xor, ceil, convert_element_type, copysign, cos, cosh, div, eq, erf, erf_inv, exp,
    expm1, floor, full_like, ge, gt, integer_pow, is_finite, le, log, log1p, logistic, lt, max, min,
    mul, ne, neg, nextafter, pow, rem, round, rsqrt, select_n, shift_left, shift_right_logical,
    sign, sin, sinh, sqrt, square, sub, tan, tanh)

# --- primitives: complex numbers ----------------------------------------------------------------
from flamefx.primitives.complex_ops import complex_ as complex
from flamefx.primitives.complex_ops import conj, imag, real

# --- primitives: reductions --------------------------------------------------------------------
from flamefx.primitives.reductions import (
    argmax, argmin, reduce_and, reduce_max, reduce_min, reduce_or, reduce_prod, reduce_sum)

# --- primitives: structural --------------------------------------------------------------------
from flamefx.primitives.structural import (
    broadcast_in_dim, concatenate, copy, expand_dims, iota, pad, reshape, rev, slice, squeeze,
    transpose)

# --- primitives: indexing, linear algebra, convolution -----------------------------------------
from flamefx.primitives.indexing import gather, scatter
from flamefx.primitives.sorting import sort, sort_key_val, top_k
from flamefx.lax_conv import (
    ConvDimensionNumbers, Precision, conv, conv_dimension_numbers, conv_general_dilated,
    conv_general_permutations, conv_general_shape_tuple, conv_shape_tuple, conv_transpose,
    conv_transpose_shape_tuple, conv_with_general_padding, padtype_to_pads)

# --- composites: windowed/monoid reductions, prefix scans, map, slicing helpers, products ------
from flamefx.lax_extras import (
    associative_scan, batch_matmul, broadcast, clamp, collapse, cumlogsumexp, cummax, cummin,
    cumprod, cumsum, dot, dot_general, dynamic_index_in_dim, dynamic_slice, dynamic_slice_in_dim,
    dynamic_update_index_in_dim, dynamic_update_slice, dynamic_update_slice_in_dim, full,
    index_in_dim, map, reduce, reduce_window, reduce_window_shape_tuple, select, slice_in_dim,
    zeros_like_array)

# --- primitives: Fourier transforms -------------------------------------------------------------
from flamefx.primitives.fft import FftType, fft

# --- primitives: special functions -------------------------------------------------------------
from flamefx.primitives.special import (
    bessel_i0e, bessel_i1e, betainc, digamma, erfc, igamma, igamma_grad_a, igammac, lgamma,
    polygamma, zeta)

# --- autodiff helpers --------------------------------------------------------------------------
from flamefx.transforms.ad import stop_gradient

# --- control flow (cond, scan, while_loop, fori_loop) ------------------------------------------
from flamefx.primitives.control_flow import cond, switch, while_loop  # noqa: F401
from flamefx.primitives.scan import fori_loop, scan  # noqa: F401

# --- collectives over a named vmap/pmap axis ---------------------------------------------------
from flamefx.primitives.collectives import all_gather, pmax, pmean, psum, psum_scatter

# --- linear algebra: JAX's lax.linalg (flamefx/lax_linalg.py says why it lives there) ---------
from flamefx import lax_linalg as linalg
