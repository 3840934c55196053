"""Embedding tables at scale: sizing by sparsity, unified tables, pruning."""
