"""Clip memory: the FAISS store, consolidation, retrieval under a token budget."""
