"""Pytrees: nested containers of arrays that every transform flattens and rebuilds.

Built in: tuple, list, dict (keys sorted), namedtuple, None (an empty node) and
``dataclasses`` registered through :func:`register_dataclass`.

>>> leaves, treedef = tree_flatten({"w": 1.0, "b": (2.0, None)})
>>> leaves
[2.0, 1.0]
>>> tree_unflatten(treedef, [20.0, 10.0])
{'b': (20.0, None), 'w': 10.0}
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any, Callable, NamedTuple

_registry: dict[type, "_NodeType"] = {}
# register_dataclass's types -> (child fields, static fields, rebuilt by a positional call)
_dataclass_layouts: dict[type, tuple[tuple, tuple, bool]] = {}


class _NodeType(NamedTuple):
    flatten: Callable[[Any], tuple[list, Any]]  # node -> (children, aux_data)
    unflatten: Callable[[Any, list], Any]  # (aux_data, children) -> node


def register_pytree_node(node_type: type, flatten_fn, unflatten_fn) -> None:
    """Registers a container type with ``flatten_fn(x) -> (children, aux)`` and
    ``unflatten_fn(aux, children)``.

    >>> class Pair:
    ...     def __init__(self, a, b): self.a, self.b = a, b
    >>> register_pytree_node(Pair, lambda p: ((p.a, p.b), None), lambda _, c: Pair(*c))
    """
    if node_type in _registry:
        raise ValueError(f"{node_type.__name__} is already registered as a pytree node")
    _registry[node_type] = _NodeType(lambda x: _as_list(flatten_fn(x)), unflatten_fn)
    _leaf_types.discard(node_type)


def _as_list(pair):
    children, aux = pair
    return list(children), aux


def register_pytree_node_class(cls: type) -> type:
    """Class decorator for a class with ``tree_flatten(self)`` and a classmethod
    ``tree_unflatten(aux, children)``."""
    register_pytree_node(cls, lambda x: x.tree_flatten(), cls.tree_unflatten)
    return cls


def register_dataclass(cls: type, data_fields=None, meta_fields=None) -> type:
    """Registers a dataclass; fields are children unless listed in ``meta_fields`` (static).

    >>> @register_dataclass
    ... @dataclasses.dataclass(frozen=True)
    ... class Linear:
    ...     w: Any
    ...     b: Any
    """
    names = [f.name for f in dataclasses.fields(cls)]
    meta = tuple(meta_fields or [f.name for f in dataclasses.fields(cls)
                                 if f.metadata.get("static", False)])
    data = tuple(data_fields or [n for n in names if n not in meta])
    # Every jitted call of a model flattens its layers (the diffusion example's state
    # holds 225): attrgetter reads the fields in C.
    get_data = _fields_getter(data)
    get_meta = _fields_getter(meta)

    def flatten(x):
        return list(get_data(x)), get_meta(x)

    positional = tuple(names) == data + meta and all(f.init and f.kw_only is not True
                                                     for f in dataclasses.fields(cls))
    if positional:
        # Fields in the order children, then static (nn's layers): a positional call is
        # cheaper than building keyword arguments, once per layer per jitted call.
        def unflatten(aux, children):
            return cls(*children, *aux)
    else:
        def unflatten(aux, children):
            kwargs = dict(zip(data, children))
            kwargs.update(zip(meta, aux))
            return cls(**kwargs)

    register_pytree_node(cls, flatten, unflatten)
    # flatten already returns a list: no conversion around it (register_pytree_node's).
    _registry[cls] = _NodeType(flatten, unflatten)
    _dataclass_layouts[cls] = (data, meta, positional)
    _key_registry[cls] = lambda x: ([(GetAttrKey(n), getattr(x, n)) for n in data], get_meta(x))
    return cls


def _fields_getter(names: tuple) -> Callable[[Any], tuple]:
    """x -> the tuple of x's attributes ``names`` (attrgetter gives one bare value)."""
    if len(names) == 1:
        return lambda x: (getattr(x, names[0]),)
    return operator.attrgetter(*names) if names else (lambda x: ())


def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _node_of(x):
    """Returns (kind, children, aux) for a container, or None for a leaf."""
    t = type(x)
    if t is tuple:
        return tuple, list(x), None
    if t is list:
        return list, list(x), None
    if t is dict:
        keys = sorted(x)
        return dict, [x[k] for k in keys], tuple(keys)
    if x is None:
        return type(None), [], None
    if t in _registry:
        children, aux = _registry[t].flatten(x)
        return t, children, aux
    if _is_namedtuple(x):
        return t, list(x), None
    return None


class PyTreeDef:
    """The structure of a pytree, with leaves removed; hashable and comparable."""

    __slots__ = ("kind", "aux", "children", "num_leaves", "_hash", "_leaves_fn", "_build_fn")

    def __init__(self, kind, aux, children: tuple):
        self.kind, self.aux, self.children = kind, aux, children
        self.num_leaves = 1 if kind is None else sum(c.num_leaves for c in children)
        self._hash = hash((kind, aux, children))
        self._leaves_fn = self._build_fn = None  # generated on first ask (see below)

    def __eq__(self, other):
        return self is other or (isinstance(other, PyTreeDef) and self.kind is other.kind
                                 and self.aux == other.aux and self.children == other.children)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return f"PyTreeDef({self._describe()})"

    def _describe(self) -> str:
        if self.kind is None:
            return "*"
        inner = ", ".join(c._describe() for c in self.children)
        if self.kind is tuple:
            return f"({inner}{',' if len(self.children) == 1 else ''})"
        if self.kind is list:
            return f"[{inner}]"
        if self.kind is dict:
            return "{" + ", ".join(f"{k!r}: {c._describe()}"
                                   for k, c in zip(self.aux, self.children)) + "}"
        if self.kind is type(None):
            return "None"
        return f"{self.kind.__name__}({inner})"

    def unflatten(self, leaves):
        return tree_unflatten(self, leaves)

    def leaves_if_same(self, tree) -> list | None:
        """``tree_flatten(tree)[0]`` if ``tree`` has exactly this structure, else None:
        the check a jitted call makes against the structure it saw last, in straight-line
        code generated once for this structure (about 4x faster than ``tree_flatten``).

        >>> tree_structure({"a": 0, "b": [0]}).leaves_if_same({"a": 1, "b": [2]})
        [1, 2]
        >>> print(tree_structure({"a": 0}).leaves_if_same({"a": None}))
        None
        """
        if self._leaves_fn is None:
            self._leaves_fn = _generate_leaves_fn(self)
        return self._leaves_fn(tree)

    def builder(self) -> Callable[[list], Any]:
        """A function ``leaves -> tree`` of this structure (a list of exactly
        ``num_leaves``), generated once: what a jitted call builds its outputs with.

        >>> tree_structure((0, {"a": 0})).builder()([1, 2])
        (1, {'a': 2})
        """
        if self._build_fn is None:
            self._build_fn = _generate_build_fn(self)
        return self._build_fn

    @property
    def num_nodes(self):
        return 1 + sum(c.num_nodes for c in self.children)


LEAF = PyTreeDef(None, None, ())

# Every jitted call flattens its arguments and rebuilds its results in Python, so these
# paths are kept short (the diffusion example's state, 444 leaves in 772 nodes: flattening
# took 0.9 ms, the cache lookup compared the trees node by node). Leafness depends on
# the type alone (given the registry), so leaf types are remembered; and each structure
# is made once (``_interned``, keyed by its children's identities), so trees of one
# structure share their PyTreeDef and compare by identity.
_leaf_types: set[type] = set()
_interned: dict[tuple, PyTreeDef] = {}


def _flatten(x, is_leaf, leaves: list) -> PyTreeDef:
    if is_leaf is not None and is_leaf(x):
        leaves.append(x)
        return LEAF
    kind = type(x)
    if kind in _leaf_types:
        leaves.append(x)
        return LEAF
    if kind is dict:
        aux = tuple(sorted(x))
        children = [x[k] for k in aux]
    elif kind is list or kind is tuple:
        children, aux = x, None
    elif kind in _registry:  # layers (registered dataclasses): straight to their flatten
        children, aux = _registry[kind].flatten(x)
    else:
        node = _node_of(x)
        if node is None:
            _leaf_types.add(kind)
            leaves.append(x)
            return LEAF
        kind, children, aux = node
    if is_leaf is None:
        # Most children are leaves of a known type (arrays): appended here, not in a call
        # each (a call per leaf was half of flattening a 1000-leaf tree).
        defs = []
        for c in children:
            if type(c) in _leaf_types:
                leaves.append(c)
                defs.append(LEAF)
            else:
                defs.append(_flatten(c, None, leaves))
        defs = tuple(defs)
    else:
        defs = tuple([_flatten(c, is_leaf, leaves) for c in children])
    key = (kind, aux, tuple(map(id, defs)))
    treedef = _interned.get(key)
    if treedef is None:
        treedef = _interned[key] = PyTreeDef(kind, aux, defs)
    return treedef


def tree_flatten(tree, is_leaf=None) -> tuple[list, PyTreeDef]:
    """Returns ``(leaves, treedef)``; ``is_leaf(x)`` may stop the descent early."""
    leaves: list = []
    treedef = _flatten(tree, is_leaf, leaves)
    return leaves, treedef


def tree_unflatten(treedef: PyTreeDef, leaves) -> Any:
    """Rebuilds a tree of structure ``treedef`` from ``leaves`` (any iterable)."""
    leaves = leaves if type(leaves) is list else list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"too {'many' if len(leaves) > treedef.num_leaves else 'few'} "
                         f"leaves ({len(leaves)}) for {treedef}")
    return _build(treedef, iter(leaves))


_SENTINEL = object()


def _build(treedef: PyTreeDef, it):
    if treedef.kind is None:
        return next(it)
    children = [next(it) if c.kind is None else _build(c, it) for c in treedef.children]
    kind = treedef.kind
    if kind is tuple:
        return tuple(children)
    if kind is list:
        return children
    if kind is dict:
        return dict(zip(treedef.aux, children))
    if kind is type(None):
        return None
    if kind in _registry:
        return _registry[kind].unflatten(treedef.aux, children)
    return kind(*children)  # namedtuple


# --- code generated per structure ---------------------------------------------------------------
# A jitted training step takes the same structure every call (the diffusion example's state:
# 574 leaves in 987 nodes), so jit checks the arguments against the structure it saw last
# and rebuilds its outputs, in straight-line Python generated once per structure (as
# dataclasses and namedtuple generate theirs). The README UNet's state, CPU process time:
# flattening 475 -> 61 us, rebuilding 407 -> 193 us (optree, the C++ library: 337 / 227).
# Compiling takes ~20 ms per 1000 nodes: past this size, the tree functions are used.
_MAX_GENERATED_NODES = 20_000


class _Source:
    """Lines of a generated function and the namespace its constants live in."""

    def __init__(self):
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"_leaf_types": _leaf_types,
                                          "_leaves_by_flattening": _leaves_by_flattening}
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value) -> str:
        name = self.name("K")
        self.namespace[name] = value
        return name

    def compile(self, name: str, parameter: str) -> Callable:
        """The function ``name(parameter)`` whose body is the lines."""
        text = "\n  ".join([f"def {name}({parameter}):"] + self.lines)
        exec(compile(text, f"<pytree {name}>", "exec"), self.namespace)
        return self.namespace[name]


def _attribute_layout(kind) -> tuple | None:
    """A registered dataclass's (child fields, static fields, positional) when its fields can
    be read as attributes in generated code, else None."""
    layout = _dataclass_layouts.get(kind)
    if layout is None or not all(n.isidentifier() for n in layout[0] + layout[1]):
        return None
    return layout


def _unpack(src: _Source, n: int, sequence: str) -> list[str]:
    """Emits ``x1, x2, = <sequence of n>``; returns the n names."""
    names = [src.name("x") for _ in range(n)]
    if names:
        src.lines.append(f"{''.join(name + ', ' for name in names)}= {sequence}")
    return names


def _emit_match(treedef: PyTreeDef, var: str, src: _Source, leaves: list[str]) -> None:
    """Emits the checks that ``var`` has the node ``treedef`` (each failing one returns None)
    and the reads of its children, depth first; leaf names are appended to ``leaves``."""
    kind, n = treedef.kind, len(treedef.children)
    if kind is None:
        leaves.append(var)
        return
    if kind is type(None):
        src.lines.append(f"if {var} is not None: return None")
        return
    kind_name = src.const(kind)
    layout = _attribute_layout(kind)
    if kind is dict:
        src.lines.append(f"if type({var}) is not {kind_name} or {var}.keys() != "
                         f"{src.const(frozenset(treedef.aux))}: return None")
        names = _unpack(src, n, "".join(f"{var}[{src.const(k)}], " for k in treedef.aux))
    elif kind is list or kind is tuple:
        src.lines.append(f"if type({var}) is not {kind_name} or len({var}) != {n}: return None")
        names = _unpack(src, n, var)
    elif layout is not None:
        data, meta, _ = layout
        src.lines.append(f"if type({var}) is not {kind_name}: return None")
        if meta:
            statics = "".join(f"{var}.{m}, " for m in meta)
            src.lines.append(f"if ({statics}) != {src.const(treedef.aux)}: return None")
        names = _unpack(src, n, "".join(f"{var}.{d}, " for d in data))
    elif kind in _registry:
        children, aux = src.name("c"), src.name("a")
        src.lines.append(f"if type({var}) is not {kind_name}: return None")
        src.lines.append(f"{children}, {aux} = {src.const(_registry[kind].flatten)}({var})")
        src.lines.append(f"if {aux} != {src.const(treedef.aux)} or len({children}) != {n}: "
                         f"return None")
        names = _unpack(src, n, children)
    else:  # namedtuple: its type fixes its length
        src.lines.append(f"if type({var}) is not {kind_name}: return None")
        names = _unpack(src, n, var)
    for child, name in zip(treedef.children, names):
        _emit_match(child, name, src, leaves)


def _emit_build(treedef: PyTreeDef, src: _Source, leaves) -> str:
    """Emits the construction of the node ``treedef`` from the leaf names ``leaves`` (an
    iterator), children first; returns the expression that holds it."""
    kind = treedef.kind
    if kind is None:
        return next(leaves)
    if kind is type(None):
        return "None"
    children = [_emit_build(c, src, leaves) for c in treedef.children]
    listed = "".join(c + ", " for c in children)
    node = src.name("t")
    layout = _attribute_layout(kind)
    if kind is tuple:
        src.lines.append(f"{node} = ({listed})")
    elif kind is list:
        src.lines.append(f"{node} = [{listed}]")
    elif kind is dict:
        items = "".join(f"{src.const(k)}: {c}, " for k, c in zip(treedef.aux, children))
        src.lines.append(f"{node} = {{{items}}}")
    elif layout is not None and layout[2]:  # the positional call register_dataclass makes
        src.lines.append(f"{node} = {src.const(kind)}({listed}*{src.const(treedef.aux)})")
    elif kind in _registry:
        src.lines.append(f"{node} = {src.const(_registry[kind].unflatten)}("
                         f"{src.const(treedef.aux)}, [{listed}])")
    else:  # namedtuple
        src.lines.append(f"{node} = {src.const(kind)}({listed})")
    return node


def _generate_leaves_fn(treedef: PyTreeDef) -> Callable[[Any], list | None]:
    if treedef.num_nodes > _MAX_GENERATED_NODES:
        return functools.partial(_leaves_by_flattening, treedef)
    src, leaves = _Source(), []
    _emit_match(treedef, "tree", src, leaves)
    # Leafness as tree_flatten decides it: by type, from the types it has met as leaves (a
    # type not met yet goes through tree_flatten, which learns it).
    src.lines.append(f"leaves = [{', '.join(leaves)}]")
    src.lines.append("if _leaf_types.issuperset(map(type, leaves)): return leaves")
    src.lines.append(f"return _leaves_by_flattening({src.const(treedef)}, tree)")
    return src.compile("leaves_if_same", "tree")


def _leaves_by_flattening(treedef: PyTreeDef, tree) -> list | None:
    leaves, found = tree_flatten(tree)
    return leaves if found == treedef else None


def _generate_build_fn(treedef: PyTreeDef) -> Callable[[list], Any]:
    if treedef.num_nodes > _MAX_GENERATED_NODES:
        return functools.partial(tree_unflatten, treedef)
    src = _Source()
    names = [src.name("l") for _ in range(treedef.num_leaves)]
    if names:
        src.lines.append(f"{''.join(name + ', ' for name in names)}= leaves")
    root = _emit_build(treedef, src, iter(names))
    src.lines.append(f"return {root}")
    return src.compile("build", "leaves")


def tree_leaves(tree, is_leaf=None) -> list:
    return tree_flatten(tree, is_leaf)[0]


def tree_structure(tree, is_leaf=None) -> PyTreeDef:
    return tree_flatten(tree, is_leaf)[1]


def tree_map(f: Callable, tree, *rest, is_leaf=None):
    """Applies ``f`` leaf-wise over one or more trees of the same structure.

    >>> tree_map(lambda a, b: a + b, {"x": 1, "y": [2]}, {"x": 10, "y": [20]})
    {'x': 11, 'y': [22]}
    """
    leaves, treedef = tree_flatten(tree, is_leaf)
    others = [flatten_up_to(treedef, r, "tree_map") for r in rest]
    return tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *others)])


def flatten_up_to(treedef: PyTreeDef, tree, what: str) -> list:
    """Flattens ``tree`` to the leaves of ``treedef`` (a prefix); subtrees become leaves."""
    out: list = []
    _flatten_up_to(treedef, tree, out, what)
    return out


def _flatten_up_to(treedef: PyTreeDef, tree, out: list, what: str):
    if treedef.kind is None:
        out.append(tree)
        return
    node = _node_of(tree)
    if node is None or node[0] is not treedef.kind or node[2] != treedef.aux \
            or len(node[1]) != len(treedef.children):
        raise ValueError(f"{what}: tree structure mismatch: expected {treedef}, "
                         f"got {tree_structure(tree)}")
    for child_def, child in zip(treedef.children, node[1]):
        _flatten_up_to(child_def, child, out, what)


def broadcast_prefix(prefix_tree, full_tree, is_leaf=None, what="in_axes") -> list:
    """Replicates each leaf of ``prefix_tree`` over the matching subtree of ``full_tree``."""
    full_def = tree_structure(full_tree, is_leaf)
    out: list = []
    _broadcast(prefix_tree, full_tree, full_def, out, what, is_leaf)
    return out


def _broadcast(prefix, full, full_def, out, what, is_leaf):
    pnode = None if (is_leaf and is_leaf(prefix)) else _node_of(prefix)
    if pnode is None or prefix is None and full is not None:
        out.extend([prefix] * tree_structure(full, is_leaf).num_leaves)
        return
    fnode = _node_of(full)
    if fnode is None or fnode[0] is not pnode[0] or len(fnode[1]) != len(pnode[1]) \
            or fnode[2] != pnode[2]:
        raise ValueError(f"{what} structure {tree_structure(prefix)} is not a prefix of the "
                         f"arguments' structure {tree_structure(full)}")
    for p, f in zip(pnode[1], fnode[1]):
        _broadcast(p, f, None, out, what, is_leaf)


def tree_all(tree, *, is_leaf=None) -> bool:
    """Whether every leaf is truthy.

    >>> tree_all({"a": True, "b": [1, 2]})
    True
    """
    return all(tree_leaves(tree, is_leaf))


def tree_reduce(f: Callable, tree, initializer=_SENTINEL, is_leaf=None):
    """``functools.reduce(f, leaves[, initializer])``.

    >>> tree_reduce(lambda a, b: a + b, [1, (2, 3)])
    6
    """
    leaves = tree_leaves(tree, is_leaf)
    if initializer is _SENTINEL:
        return functools.reduce(f, leaves)
    return functools.reduce(f, leaves, initializer)


def tree_transpose(outer_treedef: PyTreeDef, inner_treedef: PyTreeDef | None, pytree_to_transpose):
    """Turns a tree of structure ``outer`` whose leaves are trees of structure ``inner``
    into a tree of structure ``inner`` whose leaves are trees of structure ``outer``
    (``inner_treedef=None``: read it from the first subtree).

    >>> tree_transpose(tree_structure([0, 0]), tree_structure((0, 0)), [(1, 2), (3, 4)])
    ([1, 3], [2, 4])
    """
    subtrees = flatten_up_to(outer_treedef, pytree_to_transpose, "tree_transpose")
    if inner_treedef is None:
        inner_treedef = tree_structure(subtrees[0]) if subtrees else LEAF
    rows = [flatten_up_to(inner_treedef, sub, "tree_transpose") for sub in subtrees]
    columns = [[row[j] for row in rows] for j in range(inner_treedef.num_leaves)]
    return tree_unflatten(inner_treedef, [tree_unflatten(outer_treedef, c) for c in columns])


def all_leaves(iterable, is_leaf=None) -> bool:
    """Whether every element of ``iterable`` is a leaf (None is not: it is an empty node).

    >>> all_leaves([1.0, "a"]), all_leaves([1.0, (2.0,)])
    (True, False)
    """
    items = list(iterable)
    leaves = tree_leaves(items, is_leaf)
    return len(leaves) == len(items) and all(a is b for a, b in zip(leaves, items))


def treedef_children(treedef: PyTreeDef) -> list[PyTreeDef]:
    """The structures of the root's children.

    >>> treedef_children(tree_structure((1, [2, 3])))
    [PyTreeDef(*), PyTreeDef([*, *])]
    """
    return list(treedef.children)


def treedef_is_leaf(treedef: PyTreeDef) -> bool:
    """Whether ``treedef`` has a single node (a leaf, or an empty node such as None), as JAX.

    >>> treedef_is_leaf(tree_structure(1.0)), treedef_is_leaf(tree_structure([1.0]))
    (True, False)
    """
    return treedef.num_nodes == 1


class Partial(functools.partial):
    """``functools.partial`` as a pytree: the bound arguments are its leaves, the function
    its static part, so a Partial can be passed through jit, vmap or grad (as JAX's).

    >>> import operator
    >>> add_one = Partial(operator.add, 1.0)
    >>> tree_leaves(add_one), add_one(2.0)
    ([1.0], 3.0)
    """

    def __new__(cls, func, *args, **kwargs):
        if isinstance(func, functools.partial):
            # functools.partial would merge a partial's arguments into this one's; keep
            # them inside the function, so that only ours are leaves.
            func = _PartialShim(func)
        return super().__new__(cls, func, *args, **kwargs)


class _PartialShim:
    __slots__ = ("partial",)

    def __init__(self, partial):
        self.partial = partial

    def __call__(self, *args, **kwargs):
        return self.partial(*args, **kwargs)

    def __eq__(self, other):
        return isinstance(other, _PartialShim) and self.partial.func == other.partial.func \
            and self.partial.args == other.partial.args \
            and self.partial.keywords == other.partial.keywords

    def __hash__(self):
        return hash(self.partial.func)


register_pytree_node(Partial, lambda p: ((p.args, p.keywords), p.func),
                     lambda func, children: Partial(func, *children[0], **children[1]))

# --- key paths --------------------------------------------------------------------------------
# Separate from the flattening above, which every jitted call runs: paths cost a key object
# per node and are asked for only by the *_with_path functions.


class DictKey(NamedTuple):
    """A dict entry on a key path: prints as ``['a']``."""
    key: Any

    def __str__(self):
        return f"[{self.key!r}]"


class SequenceKey(NamedTuple):
    """A tuple or list position on a key path: prints as ``[0]``."""
    idx: int

    def __str__(self):
        return f"[{self.idx}]"


class GetAttrKey(NamedTuple):
    """An attribute (namedtuple or dataclass field) on a key path: prints as ``.name``."""
    name: str

    def __str__(self):
        return f".{self.name}"


class FlattenedIndexKey(NamedTuple):
    """The i-th child of a node registered without keys: prints as ``[<flat index 0>]``."""
    key: int

    def __str__(self):
        return f"[<flat index {self.key}>]"


_key_registry: dict[type, Callable] = {}  # node type -> flatten_with_keys


def register_pytree_with_keys(nodetype: type, flatten_with_keys: Callable,
                              unflatten_func: Callable, flatten_func: Callable | None = None):
    """Registers a container whose ``flatten_with_keys(x)`` gives ``((key, child), ...), aux``
    so that key paths name its children (``flatten_func`` gives ``children, aux`` faster).

    >>> class Box:
    ...     def __init__(self, v): self.v = v
    >>> register_pytree_with_keys(Box, lambda b: (((GetAttrKey("v"), b.v),), None),
    ...                           lambda _, c: Box(*c))
    >>> keystr(tree_leaves_with_path({"b": Box(1.0)})[0][0])
    "['b'].v"
    """
    if flatten_func is None:
        def flatten_func(x):
            pairs, aux = flatten_with_keys(x)
            return [c for _, c in pairs], aux
    register_pytree_node(nodetype, flatten_func, unflatten_func)
    _key_registry[nodetype] = flatten_with_keys


def register_pytree_with_keys_class(cls: type) -> type:
    """Class decorator: ``tree_flatten_with_keys(self)`` and ``tree_unflatten(aux, children)``."""
    flatten = cls.tree_flatten if hasattr(cls, "tree_flatten") else None
    register_pytree_with_keys(cls, lambda x: x.tree_flatten_with_keys(), cls.tree_unflatten,
                              flatten and (lambda x: x.tree_flatten()))
    return cls


def _keys_of(x, kind, aux, children) -> list:
    if kind is tuple or kind is list:
        return [SequenceKey(i) for i in range(len(children))]
    if kind is dict:
        return [DictKey(k) for k in aux]
    if kind in _key_registry:
        return [k for k, _ in _key_registry[kind](x)[0]]
    if kind not in _registry and _is_namedtuple(x):
        return [GetAttrKey(f) for f in type(x)._fields]
    return [FlattenedIndexKey(i) for i in range(len(children))]


def _paths(x, is_leaf, prefix: tuple, out: list) -> None:
    node = None if (is_leaf is not None and is_leaf(x)) else _node_of(x)
    if node is None:
        out.append((prefix, x))
        return
    kind, children, aux = node
    for key, child in zip(_keys_of(x, kind, aux, children), children):
        _paths(child, is_leaf, prefix + (key,), out)


def tree_flatten_with_path(tree, is_leaf=None) -> tuple[list, PyTreeDef]:
    """Like ``tree_flatten``, with each leaf's key path: ``([(path, leaf), ...], treedef)``.

    >>> tree_flatten_with_path({"a": [1.0]})[0]
    [((DictKey(key='a'), SequenceKey(idx=0)), 1.0)]
    """
    out: list = []
    _paths(tree, is_leaf, (), out)
    return out, tree_structure(tree, is_leaf)


def tree_leaves_with_path(tree, is_leaf=None) -> list:
    """``[(path, leaf), ...]`` in ``tree_leaves`` order."""
    out: list = []
    _paths(tree, is_leaf, (), out)
    return out


def tree_map_with_path(f: Callable, tree, *rest, is_leaf=None):
    """Like ``tree_map``, with ``f(path, leaf, *others)``.

    >>> tree_map_with_path(lambda p, x: keystr(p), {"a": [0, 0]})
    {'a': ["['a'][0]", "['a'][1]"]}
    """
    pairs, treedef = tree_flatten_with_path(tree, is_leaf)
    others = [flatten_up_to(treedef, r, "tree_map_with_path") for r in rest]
    return tree_unflatten(treedef, [f(p, x, *xs) for (p, x), *xs in zip(pairs, *others)])


def _simple_key(key) -> str:
    return str(key[0])


def keystr(keys, *, simple: bool = False, separator: str | None = "") -> str:
    """A key path as text: ``['a'][0].b`` (``simple=True``: the bare keys, joined by
    ``separator``), as JAX prints it.

    >>> keystr((DictKey("a"), SequenceKey(0), GetAttrKey("b")))
    "['a'][0].b"
    >>> keystr((DictKey("a"), SequenceKey(0)), simple=True, separator="/")
    'a/0'
    """
    text = _simple_key if simple else str
    return ("" if separator is None else separator).join(text(k) for k in keys)
