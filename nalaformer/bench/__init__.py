"""nalaformer.bench"""
