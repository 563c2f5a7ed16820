"""CUDA kernel sources compiled for the CPU with the emulator header
(tests/kernel_emulator/cuda_on_cpu.h) and g++, and run on files: the tests' way to check a
kernel's arithmetic without a GPU. The kernel's ``main`` reads in.bin and writes out.bin in
the directory it is given as its first argument.

>>> EMULATOR.name
'cuda_on_cpu.h'
"""

from __future__ import annotations

import subprocess
from pathlib import Path

EMULATOR = Path(__file__).parent / "kernel_emulator" / "cuda_on_cpu.h"
FLAGS = ("-O1", "-std=c++20", "-pthread", "-w")


def compile_kernel(directory: Path, source: str, flags=FLAGS) -> Path:
    """Writes ``source`` to directory/kernel.cpp, compiles it, returns the executable."""
    cpp, exe = directory / "kernel.cpp", directory / "kernel"
    cpp.write_text(source)
    build = subprocess.run(["g++", *flags, "-o", str(exe), str(cpp)], capture_output=True,
                           text=True, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    return exe


def run_kernel(exe: Path, directory: Path, args, inputs: bytes, timeout: int = 120) -> bytes:
    """Runs ``exe`` on ``inputs`` (written to directory/in.bin) with ``args`` after the
    directory; returns what it wrote to directory/out.bin."""
    (directory / "in.bin").write_bytes(inputs)
    run = subprocess.run([str(exe), str(directory)] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return (directory / "out.bin").read_bytes()
