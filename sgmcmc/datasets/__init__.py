"""Small data sets shipped with sgmcmc, loadable offline.

* :func:`load_digits` -- the 8x8 handwritten digits (1797 x 64, 10 classes).
"""

from sgmcmc.datasets.digits import Digits, load_digits

__all__ = ["Digits", "load_digits"]
