"""OpenBLAS's thread count for jit's CPU plans (cpu_plan.py).

OpenBLAS's idle threads spin-wait for work. With another process on one of two cores a
product's time jumped 10-70x (benchmarks/RESULTS.md, "CPU"), so a plan runs OpenBLAS on
one thread, except a plan with large products whose calls run clearly faster on all of
OpenBLAS's threads while nothing else wants the cores (``PlanThreads``).

>>> choice = PlanThreads(2)
>>> choice.pick()   # one thread until a burst on two has shown that they win
1
"""

from __future__ import annotations

import ctypes
import os
from time import perf_counter


class BlasThreads:
    """openblas_get/set_num_threads of the OpenBLAS NumPy runs on (through threadpoolctl's
    discovery of it; ``available`` is False without threadpoolctl or OpenBLAS)."""

    def __init__(self):
        self.get = self.set = None
        try:
            from threadpoolctl import ThreadpoolController
            blas = [c for c in ThreadpoolController().lib_controllers
                    if c.internal_api == "openblas" and "numpy" in c.filepath]
        except Exception:  # noqa: BLE001  (no threadpoolctl: OpenBLAS keeps its setting)
            blas = []
        if blas:
            lib = ctypes.CDLL(blas[0].filepath)
            for prefix in ("", "scipy_"):
                for suffix in ("", "64_", "_64"):
                    if hasattr(lib, f"{prefix}openblas_get_num_threads{suffix}"):
                        self.get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                        self.set = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
                        self.set.argtypes = [ctypes.c_int]
                        break
                if self.get is not None:
                    break
        self.available = self.get is not None
        self.default = self.get() if self.available else None  # before any plan set it


_blas = None


def blas_threads() -> BlasThreads:
    """The process's ``BlasThreads`` (found on first use).

    >>> blas = blas_threads()
    >>> blas.get() >= 1 if blas.available else True
    True
    """
    global _blas
    if _blas is None:
        _blas = BlasThreads()
    return _blas


class PlanThreads:
    """The OpenBLAS thread count of a plan's calls: one, unless OpenBLAS's own (``many``)
    clearly runs whole calls faster. Every ``gap`` calls (doubling after each loss, up to
    MAX_GAP) a burst of BURST calls runs on ``many``. It is kept if each of those calls but
    the first (which wakes OpenBLAS's threads) took under MARGIN of the median one-thread
    call, and dropped at the second later call in a row over SLOW times that median.
    OpenBLAS's idle threads spin: with another process on one of two cores, a call on two
    threads took 2-70x its quiet time (benchmarks/RESULTS.md, "CPU"), so a loss costs one
    burst, and a core getting busy two slow calls (one slow call alone, another process's
    short burst, had dropped C1's two threads for 256 calls in a quiet minute). A burst also waits while other threads want the
    cores it would use (``cores_taken``, looked at every FIRST_GAP calls; not within
    SPIN_SECONDS of a call on ``many``, whose idle threads are still spinning). Chosen per
    call, not per product: switching the count between the products of one call cost
    more than it saved."""

    BURST, MARGIN, SLOW, WINDOW, FIRST_GAP, MAX_GAP, SPIN_SECONDS = \
        4, 0.85, 1.25, 5, 8, 1024, 0.25
    __slots__ = ("burst", "countdown", "gap", "last_many", "many", "on_many", "one",
                 "slow")

    def __init__(self, many: int):
        self.many, self.on_many, self.last_many = many, False, -1e9
        self.one: list[float] = []  # the last WINDOW one-thread call times
        self.burst = 0  # calls of the burst still to run
        self.slow = False  # the last call on ``many`` was over SLOW
        self.gap = self.countdown = self.FIRST_GAP

    def pick(self) -> int:
        if self.burst or self.on_many:
            return self.many
        self.countdown -= 1
        if self.countdown > 0 or len(self.one) < self.WINDOW:
            return 1
        if perf_counter() - self.last_many > self.SPIN_SECONDS and \
                cores_taken() > (os.cpu_count() or 1) - self.many:
            self.countdown = self.FIRST_GAP  # look again soon
            return 1
        self.burst = self.BURST
        return self.many

    def record(self, count: int, seconds: float) -> None:
        if count == 1:
            self.one.append(seconds)
            del self.one[:-self.WINDOW]
            return
        self.last_many = perf_counter()
        if self.burst:
            self.burst -= 1
            if self.burst == self.BURST - 1:
                return  # the first call of a burst wakes OpenBLAS's threads
            if seconds > self.MARGIN * _median(self.one):
                self._back_to_one()
            elif not self.burst:
                self.on_many = True
        elif seconds > self.SLOW * _median(self.one):
            if self.slow:
                self._back_to_one()  # e.g. a core got busy
            else:
                self.slow = True
        else:
            self.slow = False

    def _back_to_one(self):
        self.on_many, self.burst, self.slow = False, 0, False
        self.gap = min(2 * self.gap, self.MAX_GAP)
        self.countdown = self.gap


def cores_taken() -> int:
    """How many other threads want a CPU right now: the runnable count of /proc/loadavg,
    less the reader (1 quiet, 2 with a busy process, on this project's VMs); 0 where the
    file is missing."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0]) - 1
    except (OSError, ValueError, IndexError):
        return 0


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
