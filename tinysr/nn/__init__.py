"""The network, its training math and its files: the SRCNN model, its layers with explicit
forward/backward, the optimisers, and models/checkpoints as ``.npz``.
"""
