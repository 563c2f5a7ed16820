"""flamefx.lax: the strict lax-level operations, one name per primitive, and control flow.

Unlike flamefx.numpy, nothing here broadcasts or promotes: binary operations want equal
shapes and dtypes. Each name is defined next to its primitive's declaration in
flamefx/primitives/ and re-exported here.

>>> import numpy as np
>>> from flamefx import lax
>>> lax.add(np.float32(1.0), np.float32(2.0)).item()
3.0
"""

# --- primitives: elementwise -----------------------------------------------------------------
from flamefx.primitives.elementwise import (  # noqa: F401
    abs,
    add,
    atan2,
    bitwise_and,
    bitwise_not,
    bitwise_or,
    bitwise_xor,
    ceil,
    convert_element_type,
    cos,
    div,
    eq,
    erf,
    erf_inv,
    exp,
    expm1,
    floor,
    full_like,
    ge,
    gt,
    integer_pow,
    is_finite,
    le,
    log,
    log1p,
    logistic,
    lt,
    max,
    min,
    mul,
    ne,
    neg,
    pow,
    rem,
    round,
    rsqrt,
    select_n,
    shift_left,
    shift_right_logical,
    sign,
    sin,
    sqrt,
    square,
    sub,
    tan,
    tanh,
)

# --- primitives: indexing and linear algebra ---------------------------------------------------
from flamefx.primitives.indexing import gather, scatter  # noqa: F401
from flamefx.primitives.linalg import dot_general  # noqa: F401

# --- primitives: neural-network operations -------------------------------------------------------
from flamefx.primitives.nn_ops import conv_general_dilated  # noqa: F401

# --- primitives: reductions ------------------------------------------------------------------
from flamefx.primitives.reductions import (  # noqa: F401
    argmax,
    argmin,
    cumsum,
    reduce_and,
    reduce_max,
    reduce_min,
    reduce_or,
    reduce_prod,
    reduce_sum,
)

# --- primitives: structural ------------------------------------------------------------------
from flamefx.primitives.structural import (  # noqa: F401
    broadcast_in_dim,
    concatenate,
    copy,
    dynamic_slice,
    dynamic_update_slice,
    expand_dims,
    iota,
    pad,
    reshape,
    rev,
    slice,
    squeeze,
    transpose,
)

# --- autodiff helpers ----------------------------------------------------------------------------
from flamefx.transforms.ad import stop_gradient  # noqa: F401

# --- control flow (cond, scan, while_loop, fori_loop) ----------------------------------------------
from flamefx.primitives.control_flow import (  # noqa: F401
    cond, fori_loop, scan, switch, while_loop)
