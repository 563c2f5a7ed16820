"""Checkpoint files: round trips, atomic writes that survive a crash, and clear errors for
corrupt, truncated or mismatched files."""

import collections
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest

from flamefx import tree_util
from flamefx.core import Array, ShapedArray, to_array
from flamefx.errors import FlamefxError
from flamefx.serialization import CheckpointError, load, save

ALL_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
              np.uint64, np.float16, ml_dtypes.bfloat16, np.float32, np.float64]

Pair = collections.namedtuple("Pair", "first second")


@tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Linear:
    w: object
    b: object


def _values(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def _assert_same_tree(a, b):
    leaves_a, def_a = tree_util.tree_flatten(a)
    leaves_b, def_b = tree_util.tree_flatten(b)
    assert def_a == def_b
    for x, y in zip(leaves_a, leaves_b):
        assert type(x) is type(y)
        if isinstance(x, (Array, np.ndarray)):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            assert x == y


def _example_tree():
    return {"params": {"w": [to_array(_values(np.float32, (3, 4))),
                             to_array(_values(np.float32, (4,)))],
                       "scale": to_array(_values(ml_dtypes.bfloat16, (2, 2)))},
            "step": 12, "lr": 0.125, "frozen": True, "empty": None,
            "host": np.arange(5, dtype=np.int64), "pair": (to_array(3.0), [])}


def test_round_trip_without_like(tmp_path):
    tree = _example_tree()
    save(tmp_path / "ckpt.safetensors", tree)
    loaded = load(tmp_path / "ckpt.safetensors")
    _assert_same_tree(tree, loaded)
    assert loaded["pair"][0].weak_type  # a weak scalar stays weak (promotion depends on it)


def test_round_trip_with_like_keeps_leaf_kinds(tmp_path):
    tree = _example_tree()
    save(tmp_path / "ckpt.safetensors", tree)
    like = tree_util.tree_map(lambda x: x, tree)
    _assert_same_tree(tree, load(tmp_path / "ckpt.safetensors", like=like))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_round_trips_bit_exactly(tmp_path, dtype):
    value = _values(dtype, (3, 5))
    if np.dtype(dtype).kind == "f":
        value[0, 0], value[0, 1] = np.nan, -np.inf
    tree = {"x": to_array(value), "empty": to_array(np.zeros((0, 3), dtype))}
    save(tmp_path / "c", tree)
    loaded = load(tmp_path / "c", like=tree)
    assert loaded["x"].dtype == np.dtype(dtype)
    assert np.asarray(loaded["x"]).tobytes() == value.tobytes()
    assert loaded["empty"].shape == (0, 3)


def test_namedtuples_and_dataclasses_need_like(tmp_path):
    tree = Pair(Linear(to_array(np.ones((2, 2), np.float32)), to_array(np.zeros(2, np.float32))),
                {"count": to_array(np.int32(3))})
    save(tmp_path / "c", tree)
    _assert_same_tree(tree, load(tmp_path / "c", like=tree))
    with pytest.raises(CheckpointError, match="Pair node; pass like="):
        load(tmp_path / "c")


def test_like_may_be_abstract(tmp_path):
    tree = {"w": to_array(np.ones((2, 3), np.float32))}
    save(tmp_path / "c", tree)
    loaded = load(tmp_path / "c", like={"w": ShapedArray((2, 3), np.float32)})
    np.testing.assert_array_equal(np.asarray(loaded["w"]), np.ones((2, 3)))


def test_file_layout_is_safetensors(tmp_path):
    save(tmp_path / "c", {"b": np.ones(3, np.float16), "a": np.zeros((2, 2), np.float64)})
    raw = (tmp_path / "c").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert (8 + header_len) % 8 == 0  # tensors start aligned
    header = json.loads(raw[8:8 + header_len])
    assert header["['a']"] == {"dtype": "F64", "shape": [2, 2], "data_offsets": [0, 32]}
    assert header["['b']"] == {"dtype": "F16", "shape": [3], "data_offsets": [32, 38]}
    assert len(raw) == 8 + header_len + 38
    assert isinstance(header["__metadata__"]["flamefx.tree"], str)


# --- mismatches against like -------------------------------------------------------------


def test_shape_mismatch_names_the_leaf(tmp_path):
    save(tmp_path / "c", {"params": {"w": [np.ones((2, 3), np.float32)]}})
    like = {"params": {"w": [np.ones((3, 2), np.float32)]}}
    with pytest.raises(CheckpointError, match=r"\['params'\]\['w'\]\[0\] is f32\[2,3\] in the "
                                              r"checkpoint but f32\[3,2\] in like"):
        load(tmp_path / "c", like=like)


def test_dtype_mismatch_names_the_leaf(tmp_path):
    save(tmp_path / "c", Pair(np.ones(2, np.float32), 1))
    with pytest.raises(CheckpointError, match=r"leaf first is f32\[2\] .* bf16\[2\]"):
        load(tmp_path / "c", like=Pair(np.ones(2, ml_dtypes.bfloat16), 1))


def test_structure_mismatch_says_where(tmp_path):
    save(tmp_path / "c", {"w": [np.ones(2), np.ones(2)], "b": np.ones(1)})
    with pytest.raises(CheckpointError, match=r"at \['w'\]: the file has a list of length 2"):
        load(tmp_path / "c", like={"w": [np.ones(2)], "b": np.ones(1)})
    with pytest.raises(CheckpointError, match=r"keys \['b', 'w'\].*keys \['w'\]"):
        load(tmp_path / "c", like={"w": [np.ones(2), np.ones(2)]})


# --- corrupt and truncated files --------------------------------------------------------


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "c"
    save(path, {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(4, np.float32)})
    return path


def _header(raw):
    n = int.from_bytes(raw[:8], "little")
    return n, json.loads(raw[8:8 + n])


def _rewrite_header(path, header):
    raw = path.read_bytes()
    n, _ = _header(raw)
    body = json.dumps(header).encode()
    path.write_bytes(len(body).to_bytes(8, "little") + body + raw[8 + n:])


@pytest.mark.parametrize("keep", [0, 5, 20, -1], ids=["empty", "in-length", "in-header",
                                                    "in-data"])
def test_truncated_file_is_a_clear_error(good_file, keep):
    raw = good_file.read_bytes()
    good_file.write_bytes(raw[:keep] if keep >= 0 else raw[:-3])
    with pytest.raises(CheckpointError, match="truncated"):
        load(good_file)


def test_bad_header_length(good_file):
    raw = good_file.read_bytes()
    good_file.write_bytes((2**62).to_bytes(8, "little") + raw[8:])
    with pytest.raises(CheckpointError, match="header length"):
        load(good_file)


def test_header_not_json(good_file):
    raw = bytearray(good_file.read_bytes())
    raw[8] = ord("#")
    good_file.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(good_file)


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["['w']"].update(shape=[4, 4]), "needs 64"),
    (lambda h: h["['w']"].update(dtype="F8"), "unknown dtype"),
    (lambda h: h["['w']"].update(data_offsets=[16, 4000]), "file holds only"),
    (lambda h: h["['w']"].update(shape=[-3, -4]), "invalid shape"),
    (lambda h: h.pop("['b']"), "does not list"),
    (lambda h: h["__metadata__"].update({"flamefx.tree": "{oops"}), "tree structure"),
])
def test_corrupt_header_fields(good_file, edit, message):
    _, header = _header(good_file.read_bytes())
    edit(header)
    _rewrite_header(good_file, header)
    with pytest.raises(CheckpointError, match=message):
        load(good_file)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load(tmp_path / "nope")
    # ... and it is the FileNotFoundError that `open` would raise, naming the path.
    with pytest.raises(FileNotFoundError) as info:
        load(tmp_path / "nope")
    assert info.value.filename == str(tmp_path / "nope")
    assert info.value.errno == errno.ENOENT


def test_save_into_a_missing_folder_names_the_users_path(tmp_path):
    target = tmp_path / "no_such_folder" / "c"
    with pytest.raises(FileNotFoundError, match="no_such_folder does not exist") as info:
        save(target, {"w": np.ones(2, np.float32)})
    assert info.value.filename == str(target)
    assert ".tmp" not in str(info.value)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoints_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        save(tmp_path / "c", {"w": np.ones(2, np.float32)})
        np.save(tmp_path / "n.npy", np.ones(2))
    finally:
        os.umask(old)
    mode = os.stat(tmp_path / "c").st_mode & 0o777
    assert mode == 0o666 & ~umask
    assert mode == os.stat(tmp_path / "n.npy").st_mode & 0o777


def test_unsavable_leaf(tmp_path):
    with pytest.raises(FlamefxError, match=r"cannot save object at \['x'\]"):
        save(tmp_path / "c", {"x": object()})
    assert not os.listdir(tmp_path)


# --- atomic writes ----------------------------------------------------------------------


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c"
    old = {"w": np.ones(1000, np.float32)}
    save(path, old)

    from flamefx import serialization

    def write_half_then_fail(f, chunks):
        data = b"".join(chunks)
        f.write(data[:len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(serialization, "_write_payload", write_half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        save(path, {"w": np.zeros(1000, np.float32)})
    _assert_same_tree(old, load(path))
    assert os.listdir(tmp_path) == ["c"]  # the partial temporary file is cleaned up


def test_killed_writer_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "c"
    old = {"w": np.ones(1000, np.float32)}
    save(path, old)
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from flamefx import serialization

        def write_half_then_die(f, chunks):
            data = b"".join(chunks)
            f.write(data[:len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        serialization._write_payload = write_half_then_die
        serialization.save({str(path)!r}, {{"w": np.zeros(1000, np.float32)}})
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] + sys.path))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    # The dead writer's temporary file is there, named with its pid ...
    leftovers = [name for name in os.listdir(tmp_path) if name != "c"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".c.")
    assert leftovers[0].endswith(".tmp")
    assert int(leftovers[0].split(".")[2]) != os.getpid()
    # ... the previous checkpoint is intact, and the next save of that path removes it.
    _assert_same_tree(old, load(path))
    new = {"w": np.full(1000, 2.0, np.float32)}
    save(path, new)
    assert os.listdir(tmp_path) == ["c"]
    _assert_same_tree(new, load(path))


def test_load_removes_dead_writers_temps_but_not_live_ones(tmp_path):
    from flamefx import serialization
    path = tmp_path / "c"
    save(path, {"w": np.ones(3, np.float32)})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, check=True)
    dead_temp = serialization._temp_name(str(path), int(dead.stdout))
    live_temp = serialization._temp_name(str(path), os.getppid())
    other_file = tmp_path / ".d.123.0123abcd.tmp"  # another checkpoint's: not ours to touch
    for name in (dead_temp, live_temp, other_file):
        open(name, "wb").close()
    load(path)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["c", os.path.basename(live_temp), other_file.name])


# --- other writers and devices ----------------------------------------------------------


def test_reads_files_written_by_the_safetensors_package(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {"w": _values(np.float32, (3, 4)), "b": _values(np.int64, (4,)),
               "h": _values(np.float16, (2,))}
    st_numpy.save_file(tensors, str(tmp_path / "st"))
    loaded = load(tmp_path / "st")
    assert sorted(loaded) == ["b", "h", "w"]
    for name, value in tensors.items():
        np.testing.assert_array_equal(np.asarray(loaded[name]), value)
    like = {name: np.zeros_like(v) for name, v in tensors.items()}
    _assert_same_tree(tensors, load(tmp_path / "st", like=like))


def test_safetensors_package_reads_our_files(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    save(tmp_path / "c", {"w": _values(np.float32, (3, 4)), "b": _values(np.int8, (5,))})
    loaded = st_numpy.load_file(str(tmp_path / "c"))
    np.testing.assert_array_equal(loaded["['w']"], _values(np.float32, (3, 4)))


@pytest.mark.gpu
def test_gpu_arrays_round_trip(tmp_path):
    from flamefx import devices
    gpu = devices.devices("gpu")[0]
    tree = {"w": to_array(_values(np.float32, (64, 32)), device=gpu),
            "h": to_array(_values(ml_dtypes.bfloat16, (8,)), device=gpu)}
    save(tmp_path / "c", tree)
    loaded = load(tmp_path / "c", like=tree)
    assert loaded["w"].device == gpu
    _assert_same_tree(tree, loaded)
    cpu_like = {k: to_array(np.asarray(v), device=devices.devices("cpu")[0])
                for k, v in tree.items()}
    assert load(tmp_path / "c", like=cpu_like)["w"].device.platform == "cpu"
