"""Capture: models located and loaded (hub, folder, GGUF, embedded), blocks found, activations extracted,
pooled and cached on disk (atomic, checksummed), alone or under torchrun.
"""
