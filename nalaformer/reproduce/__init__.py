"""nalaformer.reproduce"""
