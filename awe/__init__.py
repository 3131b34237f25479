"""awe: an open, modern Python re-implementation of the Astro-WISE information system."""

__version__ = "0.1.0"
