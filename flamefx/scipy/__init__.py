"""flamefx.scipy: jax.scipy's namespaces (special functions, distributions) on flamefx arrays.

>>> import flamefx.scipy
>>> float(flamefx.scipy.special.expit(0.0))
0.5
"""

from flamefx.scipy import special  # noqa: F401
from flamefx.scipy import linalg  # noqa: F401
from flamefx.scipy import stats  # noqa: F401
