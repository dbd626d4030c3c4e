"""Finetuning: training a model with a linear head (`train`), the checkpoints it writes and lists,
the classifier's forward pass (predictions, weak labels), and weak-to-strong generalisation.
"""
