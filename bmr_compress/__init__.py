"""bmr-compress: physically smaller, faster models chosen by Bayesian model reduction.

Importing this package is cheap: it does not import torch. Heavy modules are imported by
the stages that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bmr-compress")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
