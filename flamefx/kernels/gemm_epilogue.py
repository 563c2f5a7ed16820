"""GEMM epilogues for jit's GPU plan: a matrix product and the work XLA folds into it.

``rewrite(jaxpr, accept)`` finds, in an optimized jaxpr,

- forward: a ``dot_general`` (2-D, or an lhs whose leading axes flatten into rows) whose
  result is read only by an ``add`` of a bias broadcast along the rows (one value per
  output column), then optionally a ReLU or a tanh-GELU of that sum: one GEMM with
  cuBLASLt's BIAS, RELU_BIAS or GELU_BIAS epilogue;
- backward: a ``dot_general`` contracting the leading axes of both operands (a weight
  gradient, ``x^T @ ct``) where one operand is also summed over those axes by a
  ``reduce_sum`` (the bias gradient): one GEMM with the BGRADA or BGRADB epilogue;

and replaces each such group by one ``gemm_epilogue`` equation, for which ``accept``
(cuBLASLt's heuristic, on the GPU) has an algorithm. Everything else is left exactly as
it was. A float32 GEMM's precision (highest / tf32 / bf16) is resolved when the plan is
made, as JAX resolves it at trace time (an unfused dot_general reads the option at each
call). The activation is recognized by what it computes, not how it is spelled: the
elementwise equations between the sum and the activation's result are run on probe values
and compared with ReLU and with the tanh form of GELU (``nn.gelu(approximate=True)``; the
erf form differs by up to 3e-4 and is left to the fusion kernels, as is SiLU). A ReLU mask
that the backward also reads (``x > 0``) is recomputed from the ReLU's output (the same
values: relu(x) > 0 exactly where x > 0), just before the equation that reads it, so it
joins that equation's fused kernel.

``gemm_epilogue`` equations are plan steps, not primitives (nothing traces them; no rule
but the two impls): a NumPy impl, so a rewritten jaxpr runs on the CPU (the tests compare
it with the original), and a CUDA impl through flamefx/kernels/cublaslt.py. The
environment variable FLAMEFX_GEMM_EPILOGUES=1 turns the rewrite on, and a list such as
``bias,relu_bias`` turns on only those epilogues (read when a GPU executable is built). It is
off by default: the cuBLASLt path has not yet run on a GPU (no machine could be had in the
session that wrote it), and every jitted dense layer would take it.

>>> import flamefx, flamefx.numpy as fnp
>>> from flamefx import nn
>>> f = lambda x, w, b: nn.relu(x @ w + b)
>>> jaxpr = flamefx.make_jaxpr(f)(fnp.ones((8, 4)), fnp.ones((4, 16)), fnp.ones(16)).jaxpr
>>> [e.prim.name for e in rewrite(jaxpr).eqns]
['gemm_epilogue']
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from typing import Callable

import numpy as np

from flamefx import config, dtypes
from flamefx.errors import FlamefxValueError
from flamefx.jaxpr import Jaxpr, JaxprEqn, Literal, Var
from flamefx.kernels.cuda_elementwise import Elementwise

log = logging.getLogger("flamefx.jit")

_GEMM_DTYPES = frozenset({dtypes.float32, dtypes.float16, dtypes.bfloat16})
_VIEWS = frozenset({"reshape", "squeeze", "expand_dims"})
# Elementwise equations an activation may take at most (tanh-GELU is 11).
_MAX_CHAIN = 24
# Probe points for recognizing an activation: both signs, zero, tiny and large values.
# (A clip far from the data or a threshold near 0 must not pass for a ReLU: values up to
# 1e8 and down to 1e-6.)
_PROBES = np.array([-1e8, -1e4, -100.0, -30.0, -6.0, -3.0, -2.0, -1.3, -1.0, -0.7, -0.5, -0.1,
                    -1e-3, -1e-6, 0.0, 1e-6, 1e-3, 0.1, 0.5, 0.7, 1.0, 1.3, 2.0, 3.0, 6.0,
                    30.0, 100.0, 1e4, 1e8])
_GELU_C = math.sqrt(2.0 / math.pi)


def gelu_tanh(x):
    """The tanh form of GELU, as cuBLASLt's GELU epilogue and ``nn.gelu(approximate=True)``.

    >>> round(float(gelu_tanh(np.float64(1.0))), 6)
    0.841192
    """
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + 0.044715 * x * x * x)))


_ACTIVATIONS = {"relu_bias": lambda x: np.maximum(x, 0.0), "gelu_bias": gelu_tanh}


EPILOGUES = ("bias", "relu_bias", "gelu_bias", "bgrada", "bgradb")


def enabled() -> frozenset:
    """The epilogues GPU executables fold into GEMMs: FLAMEFX_GEMM_EPILOGUES is 1 (all), 0
    (none, the default until the path has run on a GPU) or a comma-separated list of
    ``EPILOGUES`` (to time them apart).

    >>> sorted(enabled())
    []
    """
    value = os.environ.get("FLAMEFX_GEMM_EPILOGUES", "0").strip()
    if value == "1":
        return frozenset(EPILOGUES)
    if value == "0":
        return frozenset()
    names = frozenset(v.strip() for v in value.split(",") if v.strip())
    unknown = names - set(EPILOGUES)
    if unknown:
        raise FlamefxValueError(f"FLAMEFX_GEMM_EPILOGUES={value!r}: unknown {sorted(unknown)}; use "
                         f"1, 0 or names from {', '.join(EPILOGUES)}")
    return names


# --- the plan step ------------------------------------------------------------------------------


class GemmEpilogue:
    """What a ``gemm_epilogue`` equation runs. Params: ``epilogue`` ('bias', 'relu_bias',
    'gelu_bias', 'bgrada', 'bgradb'); the product's ``m``, ``n``, ``k`` after flattening;
    ``lhs_trans`` (the lhs is stored (k, M)), ``rhs_trans`` (the rhs is stored (n, k));
    ``precision`` (resolved when the plan was made); ``out_shape``. Operands: lhs, rhs and,
    for the bias epilogues, the bias (n,). Results: the product (after the epilogue) and,
    for the bias-gradient epilogues, the sum over k of the rhs (n,: 'bgrada') or of the lhs
    (M,: 'bgradb')."""

    name = "gemm_epilogue"
    fusion = None
    multiple_results = True
    differentiable = False

    def impl_for(self, platform: str) -> Callable:
        return _numpy_impl if platform == "cpu" else _cuda_impl

    def __repr__(self):
        return self.name


gemm_epilogue_p = GemmEpilogue()


def _operands_2d(lhs, rhs, m, n, k, lhs_trans, rhs_trans):
    """The product's (M, k) and (k, n) operands, as views of the stored ones."""
    a = lhs.reshape(k, m).T if lhs_trans else lhs.reshape(m, k)
    b = rhs.reshape(n, k).T if rhs_trans else rhs.reshape(k, n)
    return a, b


def _numpy_impl(lhs, rhs, bias=None, *, epilogue, m, n, k, lhs_trans, rhs_trans, precision,
                out_shape):
    """The reference: float32 products and epilogue (float64 for float64, which the GPU
    never plans), rounded to the output dtype once, as cuBLASLt does."""
    dtype = lhs.dtype
    wide = np.float64 if dtype == np.float64 else np.float32
    a, b = _operands_2d(lhs, rhs, m, n, k, lhs_trans, rhs_trans)
    product = a.astype(wide) @ b.astype(wide)
    if bias is not None:
        product = product + bias.astype(wide)
        if epilogue in _ACTIVATIONS:
            product = _ACTIVATIONS[epilogue](product).astype(wide)
        return [product.astype(dtype).reshape(out_shape)]
    # The sum over k of the rhs (k, n) or of the lhs (M, k), as the two bias gradients.
    grad = b.astype(wide).sum(axis=0) if epilogue == "bgrada" else a.astype(wide).sum(axis=1)
    return [product.astype(dtype).reshape(out_shape), grad.astype(dtype)]


def _cuda_impl(lhs, rhs, bias=None, *, epilogue, m, n, k, lhs_trans, rhs_trans, precision,
               out_shape):
    from flamefx.devices import cupy
    from flamefx.kernels import cublaslt
    cp = cupy()
    device_id = cp.cuda.Device().id
    gemm = cublaslt.prepare(device_id, m, n, k, lhs_trans, rhs_trans, lhs.dtype, epilogue,
                            precision)
    if gemm is None:  # the plan was accepted for this device, so this is a misuse
        raise cublaslt.LtError(f"no cuBLASLt plan for {epilogue} on device {device_id}")
    lhs, rhs = _aligned(cp, lhs), _aligned(cp, rhs)
    out = _empty(cp, out_shape, lhs.dtype)
    if bias is not None:
        vector, results = _aligned(cp, bias), [out]
    else:
        vector = _empty(cp, (n if epilogue == "bgrada" else m,), lhs.dtype)
        results = [out, vector]
    gemm(lhs.data.ptr, rhs.data.ptr, out.data.ptr, vector.data.ptr,
         cp.cuda.get_current_stream().ptr)
    return results


def _empty(cp, shape, dtype):
    if dtype == dtypes.bfloat16:  # CuPy allocates bfloat16 as its raw 16 bits
        return cp.empty(shape, dtype=np.uint16).view(dtypes.bfloat16)
    return cp.empty(shape, dtype=dtype)


def _aligned(cp, x):
    """``x`` C-contiguous at an address the prepared algorithm accepts (a copy if not)."""
    from flamefx.kernels.cublaslt import ALIGNMENT
    if x.flags.c_contiguous and x.data.ptr % ALIGNMENT == 0:
        return x
    if not x.flags.c_contiguous:
        x = cp.ascontiguousarray(x)
        if x.data.ptr % ALIGNMENT == 0:
            return x
    copy = _empty(cp, x.shape, x.dtype)
    cp.cuda.runtime.memcpyAsync(copy.data.ptr, x.data.ptr, x.nbytes,
                                cp.cuda.runtime.memcpyDeviceToDevice,
                                cp.cuda.get_current_stream().ptr)
    return copy


# --- matching -----------------------------------------------------------------------------------


class _Graph:
    """Who reads what in a jaxpr: consumers by var id (equation indices, ascending), the
    jaxpr's outputs, and scalar constants (broadcasts or views of a scalar literal)."""

    def __init__(self, jaxpr: Jaxpr):
        self.eqns = jaxpr.eqns
        self.consumers: dict[int, list[int]] = {}
        self.producer: dict[int, int] = {}
        self.constants: dict[int, float] = {}
        for i, eqn in enumerate(jaxpr.eqns):
            for v in eqn.invars:
                if isinstance(v, Var):
                    self.consumers.setdefault(v.id, []).append(i)
            for v in eqn.outvars:
                self.producer[v.id] = i
            name = eqn.prim.name
            if (name == "broadcast_in_dim" or name in _VIEWS) and len(eqn.invars) == 1:
                value = self.constant(eqn.invars[0])
                if value is not None:
                    self.constants[eqn.outvars[0].id] = value
        self.outputs = {v.id for v in jaxpr.outvars if isinstance(v, Var)}

    def constant(self, atom) -> float | None:
        if isinstance(atom, Literal):
            buffer = atom.val.buffer
            value = np.asarray(buffer if isinstance(buffer, (np.ndarray, np.generic))
                               else buffer.get())
            if value.size != 1 or dtypes.is_complex(value.dtype):
                return None
            return float(value.reshape(()))  # bfloat16's NumPy kind is 'V': no kind test
        return self.constants.get(atom.id)

    def readers(self, v: Var) -> list[int]:
        return self.consumers.get(v.id, [])


def _gemm_dtype(eqn: JaxprEqn):
    """The dtype of a real float dot_general whose operands and result share it, or None."""
    lhs, rhs = eqn.invars
    out = eqn.outvars[0]
    if not (isinstance(lhs, Var) and isinstance(rhs, Var)):
        return None
    dtype = out.aval.dtype
    if dtype not in _GEMM_DTYPES or lhs.aval.dtype != dtype or rhs.aval.dtype != dtype:
        return None
    return dtype


def _forward_layout(eqn: JaxprEqn) -> dict | None:
    """m, n, k and the transposes of ``lhs @ rhs`` with the lhs's leading axes as rows, or
    None for other dimension numbers (batch dims, several contracted axes)."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    if lb or rb or len(lc) != 1 or len(rc) != 1 or len(rhs) != 2 or not lhs:
        return None
    lc, rc = lc[0], rc[0]
    if lc == len(lhs) - 1:
        lhs_trans, m = False, math.prod(lhs[:-1])
    elif lc == 0 and len(lhs) == 2:
        lhs_trans, m = True, lhs[1]
    else:
        return None
    return dict(m=m, n=rhs[1 - rc], k=lhs[lc], lhs_trans=lhs_trans, rhs_trans=rc == 1)


def _bias_of(graph: _Graph, add: JaxprEqn, product: Var):
    """The bias vector of ``add(product, broadcast(bias))`` (either order) when the
    broadcast puts one value per output column, else None."""
    if add.prim.name != "add" or len(add.invars) != 2:
        return None
    other = add.invars[1] if add.invars[0] is product else add.invars[0]
    if not isinstance(other, Var) or other is product or other.id not in graph.producer:
        return None
    bcast = graph.eqns[graph.producer[other.id]]
    shape = product.aval.shape
    if bcast.prim.name != "broadcast_in_dim":
        return None
    bias = bcast.invars[0]
    if not isinstance(bias, Var) or bias.aval.shape != (shape[-1],) or \
            tuple(bcast.params["broadcast_dimensions"]) != (len(shape) - 1,) or \
            bias.aval.dtype != product.aval.dtype:
        return None
    return bias


def _elementwise_after(graph: _Graph, z: Var, start: int) -> list[int]:
    """Elementwise equations (in order) computing a function of ``z`` alone: each reads
    ``z``, values of earlier such equations, and scalar constants; ``z``'s shape."""
    found: list[int] = []
    defined = {z.id}
    pending = sorted(set(graph.readers(z)))
    seen = set(pending)
    while pending and len(found) < _MAX_CHAIN:
        i = pending.pop(0)
        eqn = graph.eqns[i]
        if i <= start or not isinstance(eqn.prim.fusion, Elementwise) or len(eqn.outvars) != 1:
            continue
        out = eqn.outvars[0].aval
        if out.shape != z.aval.shape or out.dtype not in (z.aval.dtype, dtypes.bool_):
            continue
        if not all(isinstance(v, Literal) or v.id in defined or v.id in graph.constants
                   for v in eqn.invars):
            continue
        found.append(i)
        defined.add(eqn.outvars[0].id)
        for c in graph.readers(eqn.outvars[0]):
            if c not in seen:
                seen.add(c)
                bisect.insort(pending, c)
    return found


def _ancestors(graph: _Graph, chain: list[int], y: Var) -> list[int]:
    """The equations of ``chain`` that ``y`` depends on, in order."""
    in_chain = set(chain)
    needed, stack = set(), [graph.producer[y.id]]
    while stack:
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        stack += [graph.producer[v.id] for v in graph.eqns[i].invars
                  if isinstance(v, Var) and graph.producer.get(v.id) in in_chain]
    return sorted(needed)


def _probe(graph: _Graph, z: Var, eqns: list[int]) -> dict[int, np.ndarray]:
    """The values of ``eqns`` (a function of ``z``) at the probe points, in float64."""
    values = {z.id: _PROBES}
    for i in eqns:
        eqn = graph.eqns[i]
        args = []
        for v in eqn.invars:
            if isinstance(v, Var) and v.id in values:
                args.append(values[v.id])
            else:
                args.append(np.full(_PROBES.shape, graph.constant(v)))
        with np.errstate(all="ignore"):
            out = eqn.prim.impl_for("cpu")(*args, **eqn.params)[0]
        values[eqn.outvars[0].id] = np.asarray(out)
    return values


def _classify(values: np.ndarray) -> str | None:
    values = values.astype(np.float64)
    for name, fn in _ACTIVATIONS.items():
        if np.allclose(values, fn(_PROBES), rtol=2e-6, atol=1e-7):
            return name
    return None


def _activation(graph: _Graph, z: Var, start: int):
    """(epilogue, result var, chain equations, masks) for the largest ReLU or tanh-GELU of
    ``z`` computed by the elementwise equations after ``start``; ('bias', z, [], []) if
    none. ``masks`` are (mask equation index, first outside reader) for ReLU masks read
    outside the chain, recomputed from the result."""
    chain = _elementwise_after(graph, z, start)
    for i in reversed(chain):
        y = graph.eqns[i].outvars[0]
        if y.aval.dtype != z.aval.dtype:
            continue
        group = _ancestors(graph, chain, y)
        try:
            values = _probe(graph, z, group)
        except Exception as e:  # noqa: BLE001  (an impl that refuses float64 probes: no match)
            log.debug("cannot probe the elementwise work after a GEMM: %s", e)
            continue
        kind = _classify(values[y.id])
        if kind is None:
            continue
        masks = _outside_reads(graph, z, y, group, values, kind)
        if masks is not None:
            return kind, y, group, masks
    return "bias", z, [], []


def _outside_reads(graph: _Graph, z: Var, y: Var, group: list[int], values, kind):
    """The ReLU masks to recompute for values of the group (or ``z``) read outside it,
    or None when some such value cannot be recomputed from ``y``."""
    inside = set(group)
    masks = []
    for v in [z] + [graph.eqns[i].outvars[0] for i in group]:
        if v is y:
            continue
        outside = [c for c in graph.readers(v) if c not in inside]
        if not outside and v.id not in graph.outputs:
            continue
        if v is z or v.id in graph.outputs or kind != "relu_bias":
            return None
        eqn = graph.eqns[graph.producer[v.id]]
        # x > 0 (or 0 < x) of z alone is relu(z) > 0: the same comparison of y.
        if not _is_sign_test(graph, eqn, z) or \
                not np.array_equal(values[v.id], values[y.id] > 0):
            return None
        if outside[0] <= group[-1]:  # read before y exists
            return None
        masks.append((graph.producer[v.id], outside[0]))
    return masks


def _is_sign_test(graph: _Graph, eqn: JaxprEqn, z: Var) -> bool:
    if eqn.prim.name == "gt" and eqn.invars[0] is z:
        return graph.constant(eqn.invars[1]) == 0.0
    if eqn.prim.name == "lt" and eqn.invars[1] is z:
        return graph.constant(eqn.invars[0]) == 0.0
    return False


class _Match:
    """One group to replace: the equations it removes, the new equation and where it goes,
    and recomputed masks (equation, index of the reader it goes before)."""

    def __init__(self, removed, eqn, position, masks=()):
        self.removed, self.eqn, self.position, self.masks = set(removed), eqn, position, masks


def _params(layout: dict, epilogue: str, dot: JaxprEqn, precision: str) -> dict:
    return dict(epilogue=epilogue, **layout, precision=precision,
                out_shape=tuple(dot.outvars[0].aval.shape))


def _match_forward(graph: _Graph, i: int, precision: str) -> _Match | None:
    dot = graph.eqns[i]
    layout = _forward_layout(dot)
    if layout is None:
        return None
    # The product, through views that keep its last axis (vmap's (B, 1, n) -> (B, n)):
    # the same rows, grouped otherwise.
    product, views = dot.outvars[0], []
    while True:
        readers = graph.readers(product)
        if len(readers) != 1 or product.id in graph.outputs:
            return None
        reader = graph.eqns[readers[0]]
        if reader.prim.name not in _VIEWS or \
                reader.outvars[0].aval.shape[-1:] != product.aval.shape[-1:]:
            break
        views.append(readers[0])
        product = reader.outvars[0]
    add_index = readers[0]
    add = graph.eqns[add_index]
    bias = _bias_of(graph, add, product)
    if bias is None:
        return None
    z = add.outvars[0]
    epilogue, y, group, masks = _activation(graph, z, add_index)
    if epilogue == "bias" and _fused_anyway(graph, z):
        return None
    removed = [i, add_index] + views + group
    lhs, rhs = dot.invars
    if not layout["lhs_trans"] and lhs.aval.ndim == 2:
        lhs, layout["lhs_trans"] = _untransposed(graph, lhs)
    if not layout["rhs_trans"]:
        rhs, layout["rhs_trans"] = _untransposed(graph, rhs)
    params = _params(layout, epilogue, dot, precision) | {"out_shape": tuple(z.aval.shape)}
    eqn = JaxprEqn(gemm_epilogue_p, [lhs, rhs, bias], [y], params, dot.source)
    remade = [(graph.eqns[m].replace(invars=[y if v is z else v
                                             for v in graph.eqns[m].invars]), reader)
              for m, reader in masks]
    return _Match(removed + [m for m, _ in masks], eqn, max(removed), remade)


def _fused_anyway(graph: _Graph, z: Var) -> bool:
    """Whether elementwise work or a reduction reads the biased product: the fusion kernel
    doing it adds the bias on the way for free (a loss's logits, GELU or SiLU under grad),
    and a bias epilogue would only move the kernel boundaries."""
    from flamefx.kernels.fusion import kind_of  # fusion imports codegen: load it lazily
    return any(kind_of(graph.eqns[c]) != "opaque" for c in graph.readers(z))


def _untransposed(graph: _Graph, v: Var) -> tuple[Var, bool]:
    """(the source of ``v`` = transpose(source) of a matrix, True), else (v, False): the
    GEMM reads the source with the transpose flag instead of a copy."""
    i = graph.producer.get(v.id)
    if i is None:
        return v, False
    eqn = graph.eqns[i]
    if eqn.prim.name == "transpose" and tuple(eqn.params["permutation"]) == (1, 0) and \
            isinstance(eqn.invars[0], Var):
        return eqn.invars[0], True
    return v, False


def _match_bias_grad(graph: _Graph, i: int, precision: str) -> _Match | None:
    """``lhs^T @ rhs`` over leading axes with a ``reduce_sum`` of an operand over them."""
    dot = graph.eqns[i]
    (lc, rc), (lb, rb) = dot.params["dimension_numbers"]
    lhs, rhs = dot.invars
    p = len(lc)
    leading = tuple(range(p))
    if lb or rb or tuple(lc) != leading or tuple(rc) != leading or \
            lhs.aval.ndim != p + 1 or rhs.aval.ndim != p + 1:
        return None
    k = math.prod(lhs.aval.shape[:p])
    m, n = lhs.aval.shape[p], rhs.aval.shape[p]
    for operand, epilogue in ((rhs, "bgrada"), (lhs, "bgradb")):
        for r in graph.readers(operand):
            reduce = graph.eqns[r]
            if reduce.prim.name != "reduce_sum" or \
                    tuple(sorted(reduce.params["axes"])) != leading or \
                    reduce.outvars[0].aval.dtype != operand.aval.dtype:
                continue
            position = _bias_grad_position(graph, i, r)
            if position is None:
                continue
            layout = dict(m=m, n=n, k=k, lhs_trans=True, rhs_trans=False)
            eqn = JaxprEqn(gemm_epilogue_p, [lhs, rhs],
                           [dot.outvars[0], reduce.outvars[0]],
                           _params(layout, epilogue, dot, precision), dot.source)
            return _Match([i, r], eqn, position)
    return None


def _bias_grad_position(graph: _Graph, dot_index: int, reduce_index: int) -> int | None:
    """Where the merged equation can go: at the earlier of the two if every input is
    defined by then, else at the later if nothing reads the earlier's result before it."""
    first, last = sorted((dot_index, reduce_index))
    inputs = [v for v in graph.eqns[dot_index].invars if isinstance(v, Var)]
    if all(graph.producer.get(v.id, -1) < first for v in inputs):
        return first
    if all(c > last for v in graph.eqns[first].outvars for c in graph.readers(v)):
        return last
    return None


def rewrite(jaxpr: Jaxpr, accept: Callable[[dict], bool] = lambda params: True) -> Jaxpr:
    """``jaxpr`` with each matched group replaced by a ``gemm_epilogue`` equation whose
    params ``accept`` takes (see the module docstring); ``jaxpr`` itself if none matched.

    >>> import flamefx, flamefx.numpy as fnp
    >>> f = lambda x, w, b: x @ w + b
    >>> jaxpr = flamefx.make_jaxpr(f)(fnp.ones((8, 4)), fnp.ones((4, 16)), fnp.ones(16)).jaxpr
    >>> rewrite(jaxpr).eqns[0].params["epilogue"]
    'bias'
    """
    graph = _Graph(jaxpr)
    precision = config.read("default_matmul_precision")
    matches, claimed = [], set()
    for i, eqn in enumerate(jaxpr.eqns):
        if eqn.prim.name != "dot_general" or i in claimed or _gemm_dtype(eqn) is None:
            continue
        own = eqn.params["precision"] or precision
        for match_fn in (_match_forward, _match_bias_grad):
            match = match_fn(graph, i, own)
            if match is None or match.removed & claimed:
                continue
            if not accept(match.eqn.params | {"dtype": eqn.outvars[0].aval.dtype}):
                log.info("GEMM epilogue %s not taken (M=%d n=%d k=%d): unfused",
                         match.eqn.params["epilogue"], match.eqn.params["m"],
                         match.eqn.params["n"], match.eqn.params["k"])
                continue
            matches.append(match)
            claimed |= match.removed
            break
    if not matches:
        return jaxpr
    return Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, _emit(jaxpr, matches, claimed))


def _emit(jaxpr: Jaxpr, matches: list[_Match], claimed: set) -> list[JaxprEqn]:
    """The equations with the matched groups replaced, then the bias broadcasts (and the
    like) that only the removed equations read dropped."""
    at = {m.position: m.eqn for m in matches}
    before: dict[int, list[JaxprEqn]] = {}
    for m in matches:
        for eqn, reader in m.masks:
            before.setdefault(reader, []).append(eqn)
    eqns = []
    for i, eqn in enumerate(jaxpr.eqns):
        eqns += before.get(i, [])
        if i in at:
            eqns.append(at[i])
        elif i not in claimed:
            eqns.append(eqn)
    fed = {v.id for i in claimed for v in jaxpr.eqns[i].invars if isinstance(v, Var)}
    return _drop_unread(eqns, fed, {v.id for v in jaxpr.outvars if isinstance(v, Var)})


def _drop_unread(eqns: list[JaxprEqn], candidates: set, outputs: set) -> list[JaxprEqn]:
    """Drops broadcasts, views and elementwise equations whose results nobody reads now,
    among those that fed removed equations (and, in turn, what fed only them)."""
    while True:
        read = outputs | {v.id for e in eqns for v in e.invars if isinstance(v, Var)}
        dead = [e for e in eqns if e.outvars and _pure(e) and
                all(v.id in candidates and v.id not in read for v in e.outvars)]
        if not dead:
            return eqns
        for e in dead:
            candidates |= {v.id for v in e.invars if isinstance(v, Var)}
        dead_ids = {id(e) for e in dead}
        eqns = [e for e in eqns if id(e) not in dead_ids]


def _pure(eqn: JaxprEqn) -> bool:
    name = eqn.prim.name
    return name in ("broadcast_in_dim", "transpose") or name in _VIEWS or \
        isinstance(eqn.prim.fusion, Elementwise)


def lt_acceptor(device_id: int, epilogues=EPILOGUES) -> Callable[[dict], bool]:
    """``accept`` for ``rewrite`` on a GPU: the group's epilogue is one of ``epilogues``
    and cuBLASLt has an algorithm for it."""
    from flamefx.kernels import cublaslt

    def accept(params: dict) -> bool:
        if params["epilogue"] not in epilogues:
            return False
        return cublaslt.prepare(device_id, params["m"], params["n"], params["k"],
                                params["lhs_trans"], params["rhs_trans"], params["dtype"],
                                params["epilogue"], params["precision"]) is not None
    return accept
