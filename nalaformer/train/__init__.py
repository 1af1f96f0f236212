"""nalaformer.train"""
