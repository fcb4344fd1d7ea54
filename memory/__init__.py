"""Clip memory: the FAISS store, consolidation, retrieval under a token budget."""

from .budget import allocate, pick_tokens
from .consolidate import merge_clips
from .lexical import BM25
from .retrieval import Retriever
from .store import FORMAT_VERSION, MemoryStore, StoreSpec, consolidate_store

__all__ = ["BM25", "FORMAT_VERSION", "MemoryStore", "Retriever", "StoreSpec", "allocate",
           "consolidate_store", "merge_clips", "pick_tokens"]
