"""Samples for reduce_window_sum/max/min with an explicit-loop float64 reference.

The reference walks every output position and every window element, mapping the window
element back to an operand index through padding and base dilation (holes and padding
contribute the identity). max/min inputs have distinct values, so finite differences never
straddle a tie.
"""

import itertools

import numpy as np

from tests.samples import Sample


def _loop_reference(combine, identity):
    def reference(x, *, window_dimensions, window_strides, padding, base_dilation,
                  window_dilation):
        out_shape = []
        for n, w, s, (lo, hi), bd, wd in zip(x.shape, window_dimensions, window_strides,
                                             padding, base_dilation, window_dilation):
            size = (n - 1) * bd + 1 + lo + hi if n else lo + hi
            out_shape.append(max(0, (size - ((w - 1) * wd + 1)) // s + 1))
        out = np.empty(out_shape, x.dtype)
        for idx in itertools.product(*(range(o) for o in out_shape)):
            acc = identity
            for tap in itertools.product(*(range(w) for w in window_dimensions)):
                source = []
                for i, t, s, (lo, _), bd, wd, n in zip(idx, tap, window_strides, padding,
                                                       base_dilation, window_dilation,
                                                       x.shape):
                    pos = i * s + t * wd - lo  # position in the dilated operand
                    source.append(pos // bd if pos % bd == 0 and 0 <= pos // bd < n else None)
                if None not in source:
                    acc = combine(acc, x[tuple(source)])
            out[idx] = acc
        return out
    return reference


def _params(window, strides, padding, base=None, wdil=None):
    n = len(window)
    return {"window_dimensions": window, "window_strides": strides, "padding": padding,
            "base_dilation": base or (1,) * n, "window_dilation": wdil or (1,) * n}


CONFIGS = [
    _params((2, 2), (2, 2), ((0, 0), (0, 0))),                      # 2x2 pooling
    _params((3, 2), (1, 2), ((1, 1), (0, 1))),                      # SAME-like padding
    _params((2, 3), (2, 1), ((1, 0), (2, 1)), base=(2, 1), wdil=(1, 2)),
    _params((2,), (1,), ((-1, 1),)),                                # negative (cropping) pad
]
SHAPES = [(4, 6), (5, 4), (3, 5), (6,)]


def _normal(shape):
    return lambda rng: [rng.normal(size=shape)]


def _distinct(shape):
    return lambda rng: [rng.permutation(np.arange(float(np.prod(shape)))).reshape(shape) / 7
                        - 1.5]


def _scalar(rng):
    return [np.array(rng.normal())]


def _samples(combine, identity, make):
    ref = _loop_reference(combine, identity)
    samples = [Sample(make=make(shape), params=params,
                      reference=lambda x, params=params: ref(x, **params), grad_argnums=(0,))
               for shape, params in zip(SHAPES, CONFIGS)]
    scalar = _params((), (), ())
    samples.append(Sample(make=_scalar, params=scalar,
                          reference=lambda x: ref(x, **scalar), grad_argnums=(0,), name="0-d"))
    ints = CONFIGS[1]
    samples.append(Sample(make=lambda rng: [rng.integers(-9, 9, (5, 4)).astype(np.int32)],
                          params=ints, reference=lambda x: ref(x, **ints), name="int32"))
    f32 = CONFIGS[0]
    samples.append(Sample(make=lambda rng: [rng.normal(size=(4, 6)).astype(np.float32)],
                          params=f32, reference=lambda x: ref(x.astype(np.float64), **f32),
                          name="float32"))
    samples.append(Sample(make=lambda rng: [rng.normal(size=(4, 6)).astype(np.float16)],
                          params=f32, reference=lambda x: ref(x.astype(np.float64), **f32),
                          name="float16"))
    return samples


SAMPLES = {
    "reduce_window_sum": _samples(lambda a, b: a + b, 0, _normal),
    "reduce_window_max": _samples(max, -np.inf, _distinct),
    "reduce_window_min": _samples(min, np.inf, _distinct),
}
