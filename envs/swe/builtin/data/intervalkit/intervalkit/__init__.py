"""intervalkit: intervals with open/closed ends and normalized interval sets."""

from intervalkit.interval import Interval, parse_interval
from intervalkit.intervalset import IntervalSet

__all__ = ["Interval", "IntervalSet", "parse_interval"]
__version__ = "1.1.0"
