"""nalaformer.ops"""
