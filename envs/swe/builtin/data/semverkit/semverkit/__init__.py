"""semverkit: Semantic Versioning 2.0.0 versions and npm-style ranges."""

from semverkit.ranges import Comparator, Range
from semverkit.version import InvalidVersion, Version

__all__ = ["Comparator", "InvalidVersion", "Range", "Version"]
__version__ = "0.3.0"
