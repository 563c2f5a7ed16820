"""Checkpoint files: pytrees of arrays saved in the safetensors format, written atomically.

A file is ``8-byte little-endian header length | JSON header | raw tensor bytes``. The
header maps each tensor's name (its path in the tree, e.g. ``['params']['w'][0]``) to its
dtype, shape and byte range; ``__metadata__["flamefx.tree"]`` holds the tree structure as
JSON, so ``load`` rebuilds dicts, lists, tuples and None without help, and any structure
(namedtuples, registered dataclasses) when given ``like``. Files from other safetensors
writers load as a flat ``{name: Array}`` dict.

A save goes to a temporary file in the same directory, is flushed and fsynced, then
renamed over the target: a crash mid-write leaves the previous checkpoint intact.

(The module is not called ``checkpoint``: ``flamefx.checkpoint`` is the rematerialization
transform, and a submodule of that name would replace it on the package when imported.)

>>> import flamefx, flamefx.numpy as fnp
>>> flamefx.save("/tmp/ckpt.safetensors", {"w": fnp.ones((2, 3)), "step": 7})  # doctest: +SKIP
>>> flamefx.load("/tmp/ckpt.safetensors")["step"]                               # doctest: +SKIP
7
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets

import numpy as np

from flamefx import dtypes, tree_util
from flamefx.core import Array, ShapedArray, Tracer, to_array
from flamefx.devices import Device
from flamefx.errors import FlamefxError

__all__ = ["CheckpointError", "CheckpointNotFoundError", "load", "save"]


class CheckpointError(FlamefxError):
    """A checkpoint file is truncated or corrupt, or does not match the expected tree."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the path: both a CheckpointError and a FileNotFoundError, so
    ``except FileNotFoundError`` catches it as it would from ``open``."""


_DTYPE_CODES = {
    dtypes.bool_: "BOOL", dtypes.int8: "I8", dtypes.int16: "I16", dtypes.int32: "I32",
    dtypes.int64: "I64", dtypes.uint8: "U8", dtypes.uint16: "U16", dtypes.uint32: "U32",
    dtypes.uint64: "U64", dtypes.float16: "F16", dtypes.bfloat16: "BF16",
    dtypes.float32: "F32", dtypes.float64: "F64",
}
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}
_TREE_KEY = "flamefx.tree"
# A header larger than this is a corrupt length field, not a real checkpoint.
_MAX_HEADER_BYTES = 100 * 2**20

# Python scalar leaves are stored as 0-d tensors and come back as the same Python type.
_SCALAR_KINDS = {bool: ("bool", dtypes.bool_), int: ("int", dtypes.int64),
                 float: ("float", dtypes.float64)}
_KIND_TYPES = {"bool": bool, "int": int, "float": float}


# --- saving ----------------------------------------------------------------------------------


def save(path, tree, metadata: dict | None = None) -> None:
    """Writes ``tree`` (a pytree of arrays and scalars) to ``path`` atomically.

    ``metadata``: optional extra ``{str: str}`` entries for the safetensors header.

    >>> save("/tmp/model.safetensors", {"w": np.zeros(3, np.float32)})  # doctest: +SKIP
    """
    tensors: list[tuple[str, np.ndarray]] = []
    structure = _encode(tree, "", tensors)
    header_meta = {"format": "flamefx", _TREE_KEY: json.dumps(structure)}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str) or key == _TREE_KEY:
            raise FlamefxError(f"checkpoint metadata must map str to str (and not use "
                               f"{_TREE_KEY!r}); got {key!r}: {value!r}")
        header_meta[key] = value
    header_bytes, chunks = _layout(tensors, header_meta)
    _write_atomically(os.fspath(path), [len(header_bytes).to_bytes(8, "little"), header_bytes,
                                        *chunks])


def _encode(node, path: str, tensors: list) -> object:
    """The JSON structure of ``node``; appends ``(name, host_array)`` for each leaf."""
    if node is None:
        return None
    if isinstance(node, Tracer):
        raise FlamefxError(f"cannot save a traced value at {_show(path)}: save the concrete "
                           f"arrays returned by the transformed function, outside of it")
    kind = type(node)
    if kind in _SCALAR_KINDS:
        name, dtype = _SCALAR_KINDS[kind]
        tensors.append((_show(path), np.asarray(node, dtype=dtype)))
        return {"leaf": _show(path), "kind": name}
    if isinstance(node, Array):
        tensors.append((_show(path), _checked_host_array(np.asarray(node), path)))
        entry = {"leaf": _show(path), "kind": "array"}
        return {**entry, "weak": True} if node.weak_type else entry
    if isinstance(node, (np.ndarray, np.generic)):
        tensors.append((_show(path), _checked_host_array(np.asarray(node), path)))
        return {"leaf": _show(path), "kind": "numpy"}
    if kind is dict:
        for key in node:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise FlamefxError(f"checkpoint dict keys must be str or int; {_show(path)} "
                                   f"has key {key!r}")
        keys = sorted(node)  # tree_util's order, so the leaves line up with tree_flatten
        return {"dict": [[k, _encode(node[k], f"{path}[{k!r}]", tensors)] for k in keys]}
    if kind in (list, tuple):
        return {kind.__name__: [_encode(c, f"{path}[{i}]", tensors) for i, c in enumerate(node)]}
    children, field_names = _custom_children(node, path)
    return {"node": _qualified_name(kind),
            "fields": [[f, _encode(c, f"{path}.{f}", tensors)]
                       for f, c in zip(field_names, children)]}


def _custom_children(node, path: str) -> tuple[list, list]:
    """Children and their field names of a namedtuple or a registered pytree node."""
    if isinstance(node, tuple) and hasattr(type(node), "_fields"):
        return list(node), list(type(node)._fields)
    flat = tree_util._node_of(node)
    if flat is None:
        raise FlamefxError(f"cannot save {type(node).__name__} at {_show(path)}: leaves must "
                           f"be arrays or Python scalars, containers dict/list/tuple/None, "
                           f"namedtuples or registered pytree nodes")
    children = flat[1]
    # Registered dataclasses flatten to their data fields, in declaration order.
    names = _dataclass_data_fields(node, len(children))
    return children, names or [f"child{i}" for i in range(len(children))]


def _dataclass_data_fields(node, count: int) -> list:
    import dataclasses
    if not dataclasses.is_dataclass(node):
        return []
    values = tree_util._node_of(node)[1]
    names = []
    for field in dataclasses.fields(node):
        if len(names) < count and getattr(node, field.name) is values[len(names)]:
            names.append(field.name)
    return names if len(names) == count else []


def _qualified_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _checked_host_array(value: np.ndarray, path: str) -> np.ndarray:
    if value.dtype not in _DTYPE_CODES:
        raise FlamefxError(f"cannot save {_show(path)}: dtype {value.dtype} is not one of "
                           f"{', '.join(str(d) for d in _DTYPE_CODES)}")
    return value


def _layout(tensors: list, header_meta: dict) -> tuple[bytes, list]:
    """The padded JSON header and the tensors' bytes in file order."""
    # Widest dtypes first: with an 8-byte aligned data start every tensor is aligned and
    # the data has no holes (safetensors requires contiguous offsets).
    order = sorted(range(len(tensors)), key=lambda i: -tensors[i][1].dtype.itemsize)
    header: dict = {"__metadata__": header_meta}
    chunks, offset = [], 0
    for i in order:
        name, value = tensors[i]
        data = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"), copy=False)
        raw = data.tobytes()
        header[name] = {"dtype": _DTYPE_CODES[value.dtype], "shape": list(value.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-(8 + len(header_bytes)) % 8)
    return header_bytes, chunks


def _temp_name(path: str, pid: int) -> str:
    # The writer's pid is in the name, so a later save can tell a dead writer's leftover
    # from a live one's file in progress.
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.{pid}.{secrets.token_hex(4)}.tmp")


def _remove_stale_temps(path: str) -> None:
    """Deletes temporary files of ``path`` left by writers that died mid-save (SIGKILL,
    power loss): those whose pid no longer runs. A live writer's file is left alone."""
    directory, base = os.path.split(os.path.abspath(path))
    pattern = re.compile(rf"\.{re.escape(base)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass  # another process cleaned it up first, or it is not ours to delete


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def _write_atomically(path: str, chunks: list) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temps(path)
    tmp_path = _temp_name(path, os.getpid())
    try:
        # Mode 0o666 less the umask, as np.save and open() give (mkstemp would give 0o600).
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"cannot save a checkpoint here: the folder "
                                f"{directory} does not exist", path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            _write_payload(f, chunks)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    _fsync_directory(directory)


def _write_payload(f, chunks: list) -> None:
    for chunk in chunks:
        f.write(chunk)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- loading ---------------------------------------------------------------------------------


def load(path, like=None, device: Device | None = None):
    """Reads a checkpoint written by :func:`save` (or any safetensors file).

    ``like``: a tree of the expected structure (arrays, ShapedArrays or scalars); every
    leaf's shape and dtype is checked against it, arrays go to its leaves' devices, and
    namedtuples and registered dataclasses are rebuilt from it. Without ``like`` arrays go
    to ``device`` (default: the default device).

    >>> params = load("/tmp/model.safetensors", like=params)  # doctest: +SKIP
    """
    path = os.fspath(path)
    _remove_stale_temps(path)
    header, data = _read_file(path)
    tensors = _validated_tensors(header, len(data), path)
    meta = header.get("__metadata__") or {}
    if _TREE_KEY not in meta:
        flat = {name: _host_value(data, info) for name, info in tensors.items()}
        if like is None:
            return {name: to_array(v, device=device) for name, v in flat.items()}
        return _rebuild_flat_like(flat, like, path)
    try:
        structure = json.loads(meta[_TREE_KEY])
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: the tree structure in the header is corrupt ({e})") \
            from None
    if like is None:
        return _decode(structure, tensors, data, path, device)
    like_leaves, like_def = tree_util.tree_flatten(like)
    stored = []
    _match_structure(structure, like, "", path, stored)
    loaded = [_leaf_like(_read_leaf(entry, tensors, data, path), entry, target, leaf_path, path)
              for (entry, leaf_path), target in zip(stored, like_leaves)]
    return tree_util.tree_unflatten(like_def, loaded)


def _read_file(path: str) -> tuple[dict, memoryview]:
    try:
        with open(path, "rb") as f:
            # One buffer, read in place: leaves are views into it (no second copy).
            content = bytearray(os.fstat(f.fileno()).st_size)
            read = f.readinto(content)
        if read < len(content):  # the file shrank while we read it
            del content[read:]
    except FileNotFoundError:
        raise CheckpointNotFoundError(errno.ENOENT, "no checkpoint at this path", path) \
            from None
    if len(content) < 8:
        raise CheckpointError(f"{path} is truncated: {len(content)} bytes, not even the 8-byte "
                              f"header length of a safetensors file")
    header_len = int.from_bytes(content[:8], "little")
    if header_len > _MAX_HEADER_BYTES:
        raise CheckpointError(f"{path} is corrupt: header length field says {header_len} "
                              f"bytes (not a safetensors file?)")
    if 8 + header_len > len(content):
        raise CheckpointError(f"{path} is truncated: the header needs {header_len} bytes, the "
                              f"file has {len(content) - 8} after the length field")
    try:
        header = json.loads(bytes(content[8:8 + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt: its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is corrupt: its header is not a JSON object")
    return header, memoryview(content)[8 + header_len:]


def _validated_tensors(header: dict, data_len: int, path: str) -> dict:
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path} is corrupt: __metadata__ must map strings to strings")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        problem = _tensor_problem(info, data_len)
        if problem:
            raise CheckpointError(f"{path} is corrupt or truncated: tensor {name!r} {problem}")
        tensors[name] = info
    return tensors


def _tensor_problem(info, data_len: int) -> str | None:
    if not isinstance(info, dict):
        return "has no dtype/shape/data_offsets entry"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _CODE_DTYPES:
        return f"has unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"has an invalid shape {shape!r}"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        return f"has invalid data_offsets {offsets!r}"
    if offsets[1] > data_len:
        return f"ends at byte {offsets[1]} of the data, but the file holds only {data_len}"
    expected = int(np.prod(shape, dtype=np.int64)) * _CODE_DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
        return (f"has {offsets[1] - offsets[0]} bytes, but shape {tuple(shape)} of {dtype} "
                f"needs {expected}")
    return None


def _host_value(data: memoryview, info: dict) -> np.ndarray:
    dtype = _CODE_DTYPES[info["dtype"]]
    begin, end = info["data_offsets"]
    value = np.frombuffer(data[begin:end], dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
    if not value.flags.aligned:
        value = value.copy()
    return value.reshape(info["shape"])


def _read_leaf(entry: dict, tensors: dict, data: memoryview, path: str) -> np.ndarray:
    name = entry.get("leaf") if isinstance(entry, dict) else None
    if name not in tensors:
        raise CheckpointError(f"{path} is corrupt: the tree refers to tensor {name!r}, which "
                              f"the header does not list")
    return _host_value(data, tensors[name])


def _decode(structure, tensors: dict, data: memoryview, path: str, device):
    """Rebuilds a tree from its JSON structure alone (no ``like``)."""
    if structure is None:
        return None
    if not isinstance(structure, dict) or len(structure) == 0:
        raise CheckpointError(f"{path} is corrupt: bad tree node {structure!r}")
    if "leaf" in structure:
        value = _read_leaf(structure, tensors, data, path)
        kind = structure.get("kind")
        if kind in _KIND_TYPES:
            return _KIND_TYPES[kind](value.item())
        if kind == "numpy":
            return value.copy()
        return to_array(value, device=device, weak=bool(structure.get("weak", False)))
    if "dict" in structure:
        return {k: _decode(c, tensors, data, path, device) for k, c in structure["dict"]}
    if "list" in structure:
        return [_decode(c, tensors, data, path, device) for c in structure["list"]]
    if "tuple" in structure:
        return tuple(_decode(c, tensors, data, path, device) for c in structure["tuple"])
    if "node" in structure:
        raise CheckpointError(f"{path} holds a {structure['node']} node; pass like= (a tree of "
                              f"the same structure) to load it")
    raise CheckpointError(f"{path} is corrupt: bad tree node {structure!r}")


def _match_structure(structure, like, tree_path: str, path: str, out: list) -> None:
    """Walks the stored structure beside ``like``; collects (leaf entry, leaf path)."""
    def differ(stored_desc: str, like_desc: str):
        raise CheckpointError(f"{path}: the checkpoint's tree differs from like at "
                              f"{_show(tree_path)}: the file has {stored_desc}, like has "
                              f"{like_desc}")

    if like is None:
        if structure is not None:
            differ(_describe_stored(structure), "None")
        return
    if _is_like_leaf(like):
        if not (isinstance(structure, dict) and "leaf" in structure):
            differ(_describe_stored(structure), "an array leaf")
        out.append((structure, tree_path))
        return
    kind = type(like)
    if kind is dict:
        if not (isinstance(structure, dict) and "dict" in structure):
            differ(_describe_stored(structure), "a dict")
        stored = {k: c for k, c in structure["dict"]}
        if sorted(stored, key=repr) != sorted(like, key=repr):
            differ(f"keys {sorted(stored, key=repr)}", f"keys {sorted(like, key=repr)}")
        for key in sorted(like):
            _match_structure(stored[key], like[key], f"{tree_path}[{key!r}]", path, out)
        return
    if kind in (list, tuple):
        name = kind.__name__
        if not (isinstance(structure, dict) and name in structure):
            differ(_describe_stored(structure), f"a {name}")
        if len(structure[name]) != len(like):
            differ(f"a {name} of length {len(structure[name])}", f"length {len(like)}")
        for i, (s, c) in enumerate(zip(structure[name], like)):
            _match_structure(s, c, f"{tree_path}[{i}]", path, out)
        return
    children, field_names = _custom_children(like, tree_path)
    if not (isinstance(structure, dict) and "node" in structure):
        differ(_describe_stored(structure), f"a {kind.__name__}")
    stored_fields = structure.get("fields", [])
    if [f for f, _ in stored_fields] != field_names:
        differ(f"{structure['node']} with fields {[f for f, _ in stored_fields]}",
               f"{_qualified_name(kind)} with fields {field_names}")
    for (field, s), c in zip(stored_fields, children):
        _match_structure(s, c, f"{tree_path}.{field}", path, out)


def _is_like_leaf(x) -> bool:
    return isinstance(x, (Array, Tracer, ShapedArray, np.ndarray, np.generic, bool, int, float)) \
        or (tree_util._node_of(x) is None and hasattr(x, "shape") and hasattr(x, "dtype"))


def _describe_stored(structure) -> str:
    if structure is None:
        return "None"
    if isinstance(structure, dict):
        for key in ("dict", "list", "tuple"):
            if key in structure:
                return f"a {key}"
        if "node" in structure:
            return f"a {structure['node']}"
        if "leaf" in structure:
            return "an array leaf"
    return repr(structure)


def _leaf_like(value: np.ndarray, entry: dict, target, leaf_path: str, path: str):
    """Checks a stored leaf against its ``like`` leaf and converts it to the same kind."""
    if type(target) in _SCALAR_KINDS:
        expected_shape, expected_dtype = (), _SCALAR_KINDS[type(target)][1]
    else:
        expected_shape, expected_dtype = tuple(target.shape), np.dtype(target.dtype)
    if tuple(value.shape) != expected_shape or value.dtype != expected_dtype:
        raise CheckpointError(
            f"{path}: leaf {_show(leaf_path)} is {_aval_text(value.shape, value.dtype)} in the "
            f"checkpoint but {_aval_text(expected_shape, expected_dtype)} in like")
    if type(target) in _SCALAR_KINDS:
        return type(target)(value.item())
    if isinstance(target, (np.ndarray, np.generic)):
        return value.copy()
    device = target.device if isinstance(target, Array) else None
    return to_array(value, device=device, weak=bool(entry.get("weak", False)))


def _rebuild_flat_like(flat: dict, like, path: str):
    """Fills ``like`` from a checkpoint without tree metadata, matching tensors by path."""
    like_leaves, like_def = tree_util.tree_flatten(like)
    entries: list = []
    _collect_like_paths(like, "", entries)
    loaded = []
    for (leaf_path, target) in zip(entries, like_leaves):
        if leaf_path not in flat:
            raise CheckpointError(f"{path} has no tensor named {leaf_path!r} (the path of a "
                                  f"leaf of like); it holds {sorted(flat)}")
        loaded.append(_leaf_like(flat[leaf_path], {}, target, leaf_path, path))
    return tree_util.tree_unflatten(like_def, loaded)


def _collect_like_paths(like, tree_path: str, out: list) -> None:
    if like is None:
        return
    if _is_like_leaf(like):
        # A bare top-level dict of tensors reads most naturally by its keys alone.
        name = _show(tree_path)
        out.append(name[2:-2] if name.count("[") == 1 and name[:2] == "['" else name)
        return
    if type(like) is dict:
        for key in sorted(like):
            _collect_like_paths(like[key], f"{tree_path}[{key!r}]", out)
    elif type(like) in (list, tuple):
        for i, c in enumerate(like):
            _collect_like_paths(c, f"{tree_path}[{i}]", out)
    else:
        children, field_names = _custom_children(like, tree_path)
        for field, c in zip(field_names, children):
            _collect_like_paths(c, f"{tree_path}.{field}", out)


def _aval_text(shape, dtype) -> str:
    return ShapedArray(shape, dtype).str_short()


def _show(tree_path: str) -> str:
    """A leaf path as a reader writes it: ``params['w'][0]``, or ``<root>`` for the tree."""
    return tree_path.lstrip(".") or "<root>"
