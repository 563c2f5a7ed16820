"""Every primitive of flamefx, one module per family; importing this registers them all."""

from flamefx.primitives import elementwise  # noqa: F401
from flamefx.primitives import complex_ops  # noqa: F401
from flamefx.primitives import reductions  # noqa: F401
from flamefx.primitives import structural  # noqa: F401
from flamefx.primitives import dynamic_slicing  # noqa: F401
from flamefx.primitives import indexing  # noqa: F401
from flamefx.primitives import linalg  # noqa: F401
from flamefx.primitives import nn_ops  # noqa: F401
from flamefx.primitives import attention  # noqa: F401
from flamefx.primitives import random_ops  # noqa: F401
from flamefx.primitives import normalization  # noqa: F401
from flamefx.primitives import control_flow  # noqa: F401
from flamefx.primitives import scan  # noqa: F401
from flamefx.primitives import collectives  # noqa: F401
from flamefx.primitives import sorting  # noqa: F401
from flamefx.primitives import special  # noqa: F401
from flamefx.primitives import fft  # noqa: F401
from flamefx.primitives import callbacks  # noqa: F401
from flamefx.primitives import windowed  # noqa: F401
