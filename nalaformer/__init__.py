"""nalaformer: Norm-Aware Linear Attention (NaLa) operators, token mixers, models and tools.

``import nalaformer`` imports neither torch nor transformers and changes nothing outside the package. Integrations
register when their module is imported, as timm's and transformers' own models do: ``nalaformer.models`` registers
the vision entrypoints with timm (if installed), ``nalaformer.models.lm`` registers ``"nala"`` with transformers'
Auto classes, ``nalaformer.train.harness`` registers the ``nalaformer`` model type with lm-evaluation-harness.
A folder written by ``NaLaForCausalLM.save_pretrained`` also loads without any of these imports, through its
``auto_map`` (``trust_remote_code=True``).
"""

__version__ = "0.1.0"
