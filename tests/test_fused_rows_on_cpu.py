"""jit's fused row reductions with an epilogue (and multi-component elementwise kernels) run
on the CPU against the plan run by NumPy.

As in test_kernels_on_cpu.py, the generated CUDA source is compiled with g++ against
tests/kernel_emulator/cuda_on_cpu.h; here it is fusion's code generator's output, for
random row programs, the epilogues jit fuses after a reduction, and optimizer updates.
"""

import shutil

import numpy as np
import pytest

from tests.test_kernels_on_cpu import EMULATOR, _run

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with C++20")


# The fused reductions shuffle with __shfl_down_sync, which the header leaves out.
_SHUFFLE_DOWN = r"""
template <class V>
V __shfl_down_sync(unsigned, V v, int offset) {
  const int t = threadIdx.x;
  shuffle_slots[t] = (double)v;
  warp_barrier[t / 32]->arrive_and_wait();
  const int from = (t & 31) + offset < 32 ? t + offset : t;
  const V out = (V)shuffle_slots[from];
  warp_barrier[t / 32]->arrive_and_wait();
  return out;
}
using std::isfinite;
"""


def _emulate_fused(tmp_path, kernel, inputs):
    """Runs a fused row reduction (one block per reduced value, no split) or an elementwise
    kernel of several components (a grid row each) on the CPU; its outputs in kernel
    order."""
    from flamefx.kernels import codegen, cuda_scalar, fusion
    arrays = [np.ascontiguousarray(a) for a in inputs]
    ctype = [codegen.storage_ctype(v.aval.dtype) for v in list(kernel.inputs) + kernel.outputs]
    held = ["unsigned char" if c == "bool" else c for c in ctype]  # no std::vector<bool>
    lines = ['#include <cstdio>', '#include <string>', 'int main(int argc, char** argv) {',
             '  FILE* f = fopen((std::string(argv[1]) + "/in.bin").c_str(), "rb");']
    for j, a in enumerate(arrays):
        lines.append(f"  auto in{j} = read_array<{held[j]}>(f, {max(a.size, 1)});")
    for j, v in enumerate(kernel.outputs):
        lines.append(f"  std::vector<{held[len(arrays) + j]}> out{j}({max(v.aval.size, 1)});")
    args = [f"({ctype[j]}*)in{j}.data()" for j in range(len(arrays))]
    args += [f"({ctype[len(arrays) + j]}*)out{j}.data()" for j in range(len(kernel.outputs))]
    grid = ((1, kernel.outer) if kernel.layout == "rows" else
            (-(-kernel.total // fusion.BLOCK), kernel.components))
    lines += [f"  launch(Dim3{{{grid[0]}, {grid[1]}, 1}}, Dim3{{{fusion.BLOCK}, 1, 1}}, [&] {{",
              f"    {kernel.name}({', '.join(args)}); }});",
              '  FILE* o = fopen((std::string(argv[1]) + "/out.bin").c_str(), "wb");']
    lines += [f"  write_array(o, out{j});" for j in range(len(kernel.outputs))] + ["}"]
    source = (f'#include "{EMULATOR}"\n' + _SHUFFLE_DOWN
              + kernel.source.replace(cuda_scalar.HALF_CONVERSIONS, "").replace(
                  "__shared__", "static") + "\n")
    outputs = [(v.aval.dtype, v.aval.shape) for v in kernel.outputs]
    return _run(tmp_path, source, "\n".join(lines), [], arrays, outputs)


def _epilogue_cases():
    """name -> (function, args): plans with row reductions whose results feed epilogues."""
    import flamefx.numpy as fnp
    from flamefx import dtypes, grad, lax, nn, value_and_grad

    rng = np.random.default_rng(11)
    logits = fnp.asarray(rng.standard_normal((6, 10)).astype(np.float32) * 3)
    bias = fnp.asarray(rng.standard_normal(10).astype(np.float32))
    labels = fnp.asarray(np.array([0, 9, 3, -1, 5, 2], np.int32))
    h = fnp.asarray(rng.standard_normal((6, 40)).astype(dtypes.bfloat16))
    c = fnp.asarray(rng.standard_normal(6).astype(dtypes.bfloat16))
    x = fnp.asarray(rng.standard_normal(300).astype(np.float32))
    scores = fnp.asarray(rng.standard_normal((2, 5, 300)).astype(np.float32) * 4)
    values = fnp.asarray(rng.standard_normal((2, 300, 3)).astype(np.float32))

    def attention_sum(s, v):  # W3's softmax form: rows longer than a block
        return fnp.sum(fnp.einsum("bqk,bkd->bqd", nn.softmax(s / 8, axis=-1), v))

    def cross_entropy(z, b, y):  # z + b made in the kernel that reduces it, as in W1
        return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(z + b, y))
    return {
        # label logit sum and max in one loop, the max made finite, log-sum-exp, 1 / row sum
        # times the mean's weight
        "cross entropy and gradient": (value_and_grad(cross_entropy), (logits, bias, labels)),
        # the epilogue reads the sum as stored in bfloat16 (rounded: the float32 output
        # tells), then an outside value
        "bfloat16 rows": (lambda h, c: (lax.reduce_sum(h, (1,)) * 3.0 + c,
                                        lax.reduce_sum(h, (1,)).astype(np.float32) * 3.0),
                          (h, c)),
        "0-d result": (lambda x: fnp.sqrt(fnp.sum(x * x)) + 1.0, (x,)),
        # max, exp sum, and the gradient's row sum: four passes over each row
        "softmax gradient passes": (grad(attention_sum, argnums=(0, 1)), (scores, values)),
        "softmax gradient passes, bfloat16": (
            grad(attention_sum, argnums=(0, 1)),
            (scores.astype(dtypes.bfloat16), values.astype(dtypes.bfloat16))),
    }


def _row_kernels_against_numpy(tmp_path, fun, args, half=False):
    """Runs ``fun``'s GPU plan step by step with NumPy, and on the CPU emulator each of its
    one-block-per-row kernels and elementwise kernels of several components; every output
    of those kernels must match. Returns the plan, the number of kernels checked, of those
    with sibling reductions, and the most passes one of them makes. ``half``: fused
    kernels keep half-precision intermediates in float32 (as XLA's fusions do) where the
    plan run by NumPy rounds each of them, so their float32 outputs get half-precision
    tolerances."""
    import flamefx
    from flamefx.jaxpr import Literal
    from flamefx.kernels.fusion import FusedKernel

    jitted = flamefx.jit(fun)
    plan = jitted.lower(*args, platform="gpu").plan
    entry, leaves, _ = jitted._lookup(args, {})
    env = {v.id: np.asarray(a) for v, a in zip(plan.jaxpr.invars, list(entry.consts) + leaves)}
    checked, siblings, passes = 0, 0, 0
    for step in plan.steps:
        fused = isinstance(step, FusedKernel)
        scope = dict(env)
        for eqn in step.eqns if fused else [step.eqn]:
            ins = [np.asarray(v.val) if isinstance(v, Literal) else scope[v.id]
                   for v in eqn.invars]
            outs = eqn.prim.impl_for("cpu")(*ins, **eqn.params)
            scope.update({v.id: np.asarray(o) for v, o in zip(eqn.outvars, outs)})
        if fused and (step.components > 1 or (step.closed and step.layout == "rows"
                                               and step.split == 1)):
            got = _emulate_fused(tmp_path, step, [env[v.id] for v in step.inputs])
            for v, g in zip(step.outputs, got):
                want = scope[v.id]
                tol = 1e-2 if want.dtype.itemsize == 2 or half else 1e-5
                if want.dtype == np.bool_:
                    np.testing.assert_array_equal(g, want)
                else:
                    np.testing.assert_allclose(g.astype(np.float64), want.astype(np.float64),
                                               rtol=tol, atol=tol, err_msg=step.name)
            checked, siblings = checked + 1, siblings + (len(step.reductions) > 1)
            passes = max(passes, step.passes)
        env.update(scope)
    return plan, checked, siblings, passes


def _random_row_program(rng):
    """A random chain over (rows, columns) arrays: elementwise steps, row reductions
    broadcast back along the rows (which make later passes), and a row value among the
    outputs."""
    import flamefx.numpy as fnp

    steps = []
    for _ in range(int(rng.integers(3, 7))):
        steps.append(int(rng.integers(0, 7)))

    def program(x, y):
        h, rows = x, []
        for kind in steps:
            if kind == 0:
                h = fnp.tanh(h) * 1.5 + y
            elif kind == 1:
                h = h - fnp.max(h, axis=-1, keepdims=True)
            elif kind == 2:
                h = h / (fnp.sum(fnp.abs(h), axis=-1, keepdims=True) + 1.0)
            elif kind == 3:
                h = fnp.exp(h * 0.1) * y
            elif kind == 4:
                mean = fnp.mean(h, axis=-1, keepdims=True)
                h = (h - mean) * fnp.max(y, axis=-1, keepdims=True)
            elif kind == 5:
                rows.append(fnp.sum(h * h, axis=-1))
            else:
                h = fnp.maximum(h, fnp.min(h, axis=-1, keepdims=True) * 0.5)
        return h, fnp.sum(h, axis=-1) + sum(rows)
    return program, steps


def test_optimizer_update_of_small_parameters_runs_a_grid_row_per_parameter(tmp_path):
    """Adam over a tree of small parameters of one shape is one kernel whose equations form
    a chain per parameter; each chain runs in its own grid row, and the kernel computes
    what the plan's equations compute one by one (4 parameters of 40 elements, plus a
    0-d one of another shape: its own kernel)."""
    import flamefx
    import flamefx.numpy as fnp
    from flamefx import optim

    rng = np.random.default_rng(5)
    params = {name: fnp.asarray(rng.standard_normal(40).astype(np.float32))
              for name in ("a", "b", "c", "d")}
    params["s"] = fnp.asarray(np.float32(0.5))
    grads = flamefx.tree_util.tree_map(lambda p: p * 0.1 + 0.01, params)
    opt = optim.adam(1e-2)

    def update(params, grads, state):
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    plan, checked, _, _ = _row_kernels_against_numpy(tmp_path, update,
                                                     (params, grads, opt.init(params)))
    assert [k.components for k in plan.kernels() if k.shape == (40,)] == [4], plan.describe()
    assert checked >= 1

    half = {k: v.astype(flamefx.dtypes.bfloat16) for k, v in params.items()}
    plan, checked, _, _ = _row_kernels_against_numpy(  # bfloat16 parameters and state
        tmp_path, update, (half, flamefx.tree_util.tree_map(lambda p: p * 0.5, half),
                           opt.init(half)), half=True)
    assert [k.components for k in plan.kernels() if k.shape == (40,)] == [4], plan.describe()

    def chains_and_a_broadcast(a, b, c, s):  # the broadcast is written out, read by no chain
        return a * 2.0 + 1.0, fnp.exp(b) - b, fnp.tanh(c), fnp.broadcast_to(s, (40,))

    plan, checked, _, _ = _row_kernels_against_numpy(
        tmp_path, chains_and_a_broadcast, (params["a"], params["b"], params["c"], params["s"]))
    assert [k.components for k in plan.kernels()] == [4], plan.describe()


@pytest.mark.parametrize("seed", range(6))
def test_random_row_pass_programs_match_the_plan_run_by_numpy(tmp_path, seed):
    """Random chains of row reductions and the elementwise work around them: every
    one-block-per-row kernel of the plan, however many passes it makes, computes what the
    plan's equations compute one by one (rows of 300: each thread takes two elements a
    pass, the second not for every thread)."""
    import flamefx.numpy as fnp

    rng = np.random.default_rng(seed)
    program, steps = _random_row_program(rng)
    x, y = (fnp.asarray(rng.standard_normal((6, 300)).astype(np.float32)) for _ in range(2))
    plan, checked, _, passes = _row_kernels_against_numpy(tmp_path, program, (x, y))
    assert checked >= 1, (steps, plan.describe())


@pytest.mark.parametrize("name", ["cross entropy and gradient", "bfloat16 rows", "0-d result",
                                  "softmax gradient passes",
                                  "softmax gradient passes, bfloat16"])
def test_fused_reduction_epilogues_match_the_plan_run_by_numpy(tmp_path, name):
    fun, args = _epilogue_cases()[name]
    plan, checked, siblings, passes = _row_kernels_against_numpy(
        tmp_path, fun, args, half=name.endswith("bfloat16"))
    # The softmax's gradient: max, then exp sum, then the row sum of the cotangent times
    # the probabilities, then the stores. In bfloat16 the cotangent comes from a GEMM
    # that runs after the kernel (jit's product simplification is for one float type).
    passes_expected = {"softmax gradient passes": 4, "softmax gradient passes, bfloat16": 3,
                       "cross entropy and gradient": 3}
    assert passes == passes_expected.get(name, 1), plan.describe()
    # The cross entropy's label logit sum and max share a kernel (sibling reductions).
    assert (checked, siblings) >= ((2, 1) if name.startswith("cross") else (1, 0)), \
        plan.describe()
