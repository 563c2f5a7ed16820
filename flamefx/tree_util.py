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
import operator
from typing import Any, Callable, NamedTuple

_registry: dict[type, "_NodeType"] = {}


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

    def unflatten(aux, children):
        kwargs = dict(zip(data, children))
        kwargs.update(zip(meta, aux))
        return cls(**kwargs)

    register_pytree_node(cls, flatten, unflatten)
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

    __slots__ = ("kind", "aux", "children", "num_leaves", "_hash")

    def __init__(self, kind, aux, children: tuple):
        self.kind, self.aux, self.children = kind, aux, children
        self.num_leaves = 1 if kind is None else sum(c.num_leaves for c in children)
        self._hash = hash((kind, aux, children))

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
    else:
        node = _node_of(x)
        if node is None:
            _leaf_types.add(kind)
            leaves.append(x)
            return LEAF
        kind, children, aux = node
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
    if node is None or node[0] is not treedef.kind or node[2] != treedef.aux:
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


def tree_all(tree) -> bool:
    return all(tree_leaves(tree))


def tree_reduce(f: Callable, tree, initializer=_SENTINEL):
    import functools as _ft
    leaves = tree_leaves(tree)
    return _ft.reduce(f, leaves) if initializer is _SENTINEL else _ft.reduce(f, leaves, initializer)
