"""nalaformer.diagnostics"""
