"""dotenvkit: a small, strict .env file parser."""

from dotenvkit.expand import expand
from dotenvkit.parser import DotenvError, load, parse

__all__ = ["DotenvError", "expand", "load", "parse"]
__version__ = "0.5.2"
