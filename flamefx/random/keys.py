"""PRNG keys (typed and raw), split, fold_in and random bits: JAX's threefry, bit for bit.

Two kinds of key, as in JAX:

- a *typed* key, ``key(seed)``: a :class:`KeyArray` of shape ``()`` (JAX's ``key<fry>``).
  It is a pytree node over one leaf, its ``uint32[..., 2]`` key data, so ``jit``, ``vmap``
  and ``scan`` (which all work on pytree leaves) carry typed keys with no special rule;
  ``keys[i]``, ``len``, iteration and ``reshape`` act on the key axes only;
- a *raw* key, ``PRNGKey(seed)``: a plain ``uint32[2]`` array.

Every function accepts both and returns keys of the kind it was given. The bits are JAX's
current default, the *partitionable* threefry (``jax_threefry_partitionable=True``): the
element at flat index ``i`` of any draw comes from the two words
``threefry2x32(key, (i >> 32, i & 0xffffffff))`` alone (their xor for 32 bits, both for
64, the xor's low bits for 8 and 16), so it does not depend on the draw's size.

Differences from JAX's typed keys: they are pytree nodes here, not leaves, so
``tree_leaves`` shows their ``uint32[..., 2]`` data, and vmap's ``in_axes``/``out_axes``
must not name the trailing word axis (negative axes); NumPy functions do not take them
(``key_data``/``wrap_key_data`` convert).

>>> k = key(0)
>>> k.shape, str(k.dtype)
((), 'key<fry>')
>>> key_data(split(k)).tolist()
[[1797259609, 2579123966], [928981903, 3453687069]]
"""

from __future__ import annotations

import math

import numpy as np

from flamefx import config, core, dtypes, tree_util
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.primitives import elementwise, structural
from flamefx.primitives.random_ops import threefry2x32

_UINT32_MASK = 0xFFFFFFFF
_UINT_DTYPES = {8: dtypes.uint8, 16: dtypes.uint16, 32: dtypes.uint32, 64: dtypes.uint64}


class KeyDType:
    """The dtype-like marker of typed keys (``str(key(0).dtype) == 'key<fry>'``)."""

    name = "key<fry>"

    def __eq__(self, other):
        return isinstance(other, KeyDType) or other == self.name

    def __hash__(self):
        return hash(self.name)

    def __str__(self):
        return self.name

    __repr__ = __str__


key_dtype = KeyDType()


class KeyArray:
    """An array of typed threefry keys: shape ``data.shape[:-1]`` over ``uint32[..., 2]``.

    >>> keys = split(key(1), 3)
    >>> keys.shape, keys[0].shape, len(list(keys))
    ((3,), (), 3)
    """

    __slots__ = ("_data",)

    def __init__(self, data):
        # No checks here: pytree machinery rebuilds nodes around placeholders (in_axes specs).
        self._data = data

    @property
    def shape(self) -> tuple:
        return tuple(self._data.shape[:-1])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype(self) -> KeyDType:
        return key_dtype

    def __getitem__(self, idx):
        idx = idx if isinstance(idx, tuple) else (idx,)
        # The trailing slice keeps the key words whole, with or without an Ellipsis in idx.
        return KeyArray(self._data[idx + (slice(None),)])

    def __len__(self):
        if not self.shape:
            raise FlamefxTypeError("len() of a single PRNG key (shape ())")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        return KeyArray(structural.reshape(self._data, tuple(shape) + (2,)))

    def ravel(self):
        return self.reshape((self.size,))

    flatten = ravel

    def __array__(self, dtype=None, copy=None):
        raise FlamefxTypeError("typed PRNG keys are not numeric arrays; take their uint32 words "
                               "with flamefx.random.key_data(keys)")

    def __repr__(self):
        data = self._data
        if not hasattr(data, "shape"):  # a tree_map result over the key data
            return f"KeyArray({data!r})"
        words = data.tolist() if isinstance(data, core.Array) else data
        return f"Array({self.shape}, dtype=key<fry>) overlaying:\n{words}"


tree_util.register_pytree_node(KeyArray, lambda k: ([k._data], None),
                               lambda _, children: KeyArray(children[0]))


# --- making keys ------------------------------------------------------------------------------


def _seed_words(seed):
    """The two key words of an integer seed, as JAX's threefry_seed: a 64-bit seed splits
    into high and low words; a 32-bit one (every seed unless x64 is on) has a zero high word."""
    x64 = config.read("enable_x64")
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seed = int(seed)
        high = (seed >> 32) & _UINT32_MASK if x64 else 0
        return core.to_array(np.array([high, seed & _UINT32_MASK], dtype=np.uint32))
    if isinstance(seed, KeyArray):
        raise FlamefxTypeError(f"key: accepts a scalar integer seed, but was given a PRNG key"
                               f"\n  at {user_frame()}")
    seed = core.ensure_array(seed)
    if not dtypes.is_int(seed.dtype) or seed.shape != ():
        raise FlamefxTypeError(f"key: the seed must be a scalar integer, got "
                               f"{seed.aval.str_short()}; use vmap for many seeds"
                               f"\n  at {user_frame()}")
    low = elementwise.convert_element_type(seed, dtypes.uint32)
    if seed.dtype.itemsize == 8:
        unsigned = elementwise.convert_element_type(seed, dtypes.uint64)
        high = elementwise.shift_right_logical(
            unsigned, core.to_array(np.uint64(32)))
        high = elementwise.convert_element_type(high, dtypes.uint32)
    else:
        high = elementwise.full_like(low, 0)
    return structural.concatenate([structural.reshape(high, (1,)),
                                   structural.reshape(low, (1,))], 0)


def key(seed) -> KeyArray:
    """A typed PRNG key (shape ``()``, dtype ``key<fry>``) from an integer seed, as
    ``jax.random.key``.

    >>> key_data(key(42)).tolist()
    [0, 42]
    """
    return KeyArray(_seed_words(seed))


def PRNGKey(seed) -> core.Array:
    """A raw PRNG key: the ``uint32[2]`` words of ``key(seed)``, as ``jax.random.PRNGKey``.

    >>> PRNGKey(42).tolist()
    [0, 42]
    """
    return _seed_words(seed)


def key_data(keys) -> core.Array:
    """The ``uint32[..., 2]`` words under typed (or raw) keys.

    >>> key_data(key(7)).tolist()
    [0, 7]
    """
    data, _ = unwrap(keys, "key_data", allow_batched=True)
    return data


def wrap_key_data(key_bits_array, *, impl=None) -> KeyArray:
    """Typed keys over ``uint32[..., 2]`` words (the inverse of :func:`key_data`).

    >>> wrap_key_data(PRNGKey(3)).shape
    ()
    """
    _check_impl(impl)
    data, _ = unwrap(key_bits_array, "wrap_key_data", allow_batched=True)
    return KeyArray(data)


def key_impl(keys) -> str:
    """The name of the keys' PRNG implementation: always ``'threefry2x32'``.

    >>> key_impl(key(0))
    'threefry2x32'
    """
    unwrap(keys, "key_impl", allow_batched=True)
    return "threefry2x32"


def clone(key):
    """``key`` itself: flamefx keys are values that nothing consumes, so a clone is the key
    (``jax.random.clone`` matters only where keys are reused-checked).

    >>> key_data(clone(key(3))).tolist()
    [0, 3]
    """
    unwrap(key, "clone", allow_batched=True)
    return key


def _check_impl(impl):
    if impl not in (None, "threefry2x32", "threefry"):
        raise FlamefxValueError(f"flamefx.random has one PRNG implementation, 'threefry2x32'; "
                                f"got impl={impl!r}\n  at {user_frame()}")


def unwrap(keys, where: str, allow_batched: bool = False):
    """``(uint32[..., 2] data, was_typed)`` of a key argument, or a clear error."""
    if isinstance(keys, KeyArray):
        data, typed = keys._data, True
    elif core.is_array(keys) or isinstance(keys, (np.ndarray, np.generic)):
        data, typed = core.ensure_array(keys), False
        if data.dtype != dtypes.uint32 or data.ndim == 0 or data.shape[-1] != 2:
            raise FlamefxTypeError(
                f"{where}: expected a PRNG key (a typed key from flamefx.random.key(0), or a "
                f"raw uint32[2] from PRNGKey(0)), got {data.aval.str_short()}"
                f"\n  at {user_frame()}")
    else:
        raise FlamefxTypeError(
            f"{where}: expected a PRNG key; make one with flamefx.random.key(0) (or "
            f"PRNGKey(0)); got {type(keys).__name__} {keys!r}\n  at {user_frame()}")
    if not allow_batched and data.ndim != 1:
        raw = "" if typed else f" (raw words {data.aval.str_short()})"
        raise FlamefxTypeError(
            f"{where}: takes a single key, got an array of keys of shape {data.shape[:-1]}"
            f"{raw}; vmap over the keys to draw from each\n  at {user_frame()}")
    return data, typed


def rewrap(data, typed: bool):
    return KeyArray(data) if typed else data


# --- the threefry hash over counters ---------------------------------------------------------


def _key_words(data):
    return (structural.reshape(structural.slice(data, (0,), (1,)), ()),
            structural.reshape(structural.slice(data, (1,), (2,)), ()))


def hash_counters(data, shape):
    """Threefry of the counters ``(i >> 32, i & 0xffffffff)``, ``i`` each element's flat
    index in ``shape`` (JAX's iota_2x32_shape): the two output words, each of ``shape``."""
    shape = tuple(shape)
    count = math.prod(shape)
    if count >= 2**32:
        raise FlamefxValueError(f"random draws of {count} elements (2**32 or more) are not "
                                f"supported\n  at {user_frame()}")
    low = structural.reshape(structural.iota_like(dtypes.uint32, (count,), 0, data), shape)
    high = elementwise.full_like(low, 0)
    k0, k1 = _key_words(data)
    return threefry2x32(k0, k1, high, low)


def as_shape(shape, where: str) -> tuple:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise FlamefxTypeError(f"{where}: shape must be a tuple of ints, got {shape!r}"
                               f"\n  at {user_frame()}") from None
    if any(d < 0 for d in shape):
        raise FlamefxValueError(f"{where}: negative dimension in shape {shape}"
                                f"\n  at {user_frame()}")
    return shape


def split(key, num=2):
    """``num`` new independent keys (``num`` an int or a shape) from one key; typed keys
    give typed keys, a raw ``uint32[2]`` key gives ``uint32[*shape, 2]``.

    >>> key_data(split(key(0), 3)).shape
    (3, 2)
    """
    data, typed = unwrap(key, "split")
    shape = as_shape(num, "split")
    y0, y1 = hash_counters(data, shape)
    words = [structural.reshape(w, shape + (1,)) for w in (y0, y1)]
    return rewrap(structural.concatenate(words, len(shape)), typed)


def fold_in(key, data):
    """A new key from ``key`` and an integer ``data`` (e.g. a step or layer index).

    >>> key_data(fold_in(key(0), 7)).tolist()
    [2716826189, 292468403]
    """
    words, typed = unwrap(key, "fold_in")
    if isinstance(data, int) and not isinstance(data, bool):
        # As JAX's asarray(data, uint32): Python ints must fit a uint32 (arrays wrap).
        if not 0 <= data < 2**32:
            raise FlamefxValueError(f"fold_in: the Python int {data} is out of range for "
                                    f"uint32 (0 <= data < 2**32)\n  at {user_frame()}")
        data = np.uint32(data)
    data = core.ensure_array(data)
    if not dtypes.is_int(data.dtype) or data.shape != ():
        raise FlamefxTypeError(f"fold_in: data must be a scalar integer, got "
                               f"{data.aval.str_short()}; vmap over data to fold in many"
                               f"\n  at {user_frame()}")
    # JAX hashes the seed words of uint32(data), i.e. the counters (0, data).
    x1 = structural.reshape(elementwise.convert_element_type(data, dtypes.uint32), (1,))
    k0, k1 = _key_words(words)
    y0, y1 = threefry2x32(k0, k1, elementwise.full_like(x1, 0), x1)
    return rewrap(structural.concatenate([y0, y1], 0), typed)


def random_bits(data, bit_width: int, shape):
    """Uniform unsigned integers of ``bit_width`` bits from one key's words (JAX's
    partitionable threefry_random_bits)."""
    y0, y1 = hash_counters(data, shape)
    if bit_width == 64:
        u64 = dtypes.uint64
        high = elementwise.convert_element_type(y0, u64)
        high = elementwise.shift_left(high, elementwise.full_like(high, 32))
        return elementwise.bitwise_or(high, elementwise.convert_element_type(y1, u64))
    words = elementwise.bitwise_xor(y0, y1)
    if bit_width == 32:
        return words
    return elementwise.convert_element_type(words, _UINT_DTYPES[bit_width])


def bits(key, shape=(), dtype=None):
    """Uniformly random unsigned integers (``uint8/16/32/64``; default ``uint32``).

    >>> bits(key(0), (3,)).tolist()
    [4070199207, 4202968722, 1427181096]
    """
    dtype = dtypes.uint32 if dtype is None else dtypes.canonicalize(dtype)
    if dtype not in _UINT_DTYPES.values():
        raise FlamefxTypeError(f"bits: dtype must be an unsigned integer dtype, got {dtype}"
                               f"\n  at {user_frame()}")
    data, _ = unwrap(key, "bits")
    return random_bits(data, dtype.itemsize * 8, as_shape(shape, "bits"))
