"""nalaformer: Norm-Aware Linear Attention (NaLa) operators, token mixers, models and tools."""

__version__ = "0.1.0"
