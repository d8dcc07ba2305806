"""The package's version, at the bottom of the import layers: any module may import it, and importing it
imports nothing else (``descentlab.__version__`` re-exports it)."""

__version__ = "0.1.0"
