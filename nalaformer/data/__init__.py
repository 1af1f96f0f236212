"""nalaformer.data"""
