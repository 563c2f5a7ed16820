"""check_grads in some of a function's arguments, the others held at their values: for the
table-driven gradient tests whose functions take non-differentiable arguments too."""

from flamefx.test_util import check_grads


def check_grads_in(fn, args, argnums, order=2):
    """check_grads (both modes, to ``order``) of ``fn`` in ``args[k]`` for ``k`` in
    ``argnums``; the other arguments stay fixed."""
    args = list(args)

    def of_differentiable(*diff_args):
        full = list(args)
        for k, x in zip(argnums, diff_args):
            full[k] = x
        return fn(*full)

    check_grads(of_differentiable, [args[k] for k in argnums], order=order)
