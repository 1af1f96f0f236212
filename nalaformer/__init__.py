"""nalaformer: Norm-Aware Linear Attention (NaLa) operators, token mixers, models and tools."""

__version__ = "0.1.0"

# Make transformers' Auto classes know the "nala" language model (at once if transformers is imported, else right
# after it is); a no-op without transformers, and `import nalaformer` stays free of torch and transformers.
from nalaformer._transformers_registration import install as _install_transformers_registration

_install_transformers_registration()
