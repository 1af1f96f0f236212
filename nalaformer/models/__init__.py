"""nalaformer.models"""
