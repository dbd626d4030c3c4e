"""Data: a DATA SPEC (`builtin:`, `hf:`, `file:`) read into `TextDataset` rows, whole or streamed in chunks,
with its schema recognised and its class names kept for legends.
"""
