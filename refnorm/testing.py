"""The conformance kit: check another implementation against refnorm from its own test suite.

This is the public name of :mod:`refnorm.oracle.conformance`; see its documentation and
``docs/conformance.md``.
"""

from .oracle.conformance import *  # noqa: F403 - the kit's public names, listed in its __all__
from .oracle.conformance import __all__  # noqa: F401
