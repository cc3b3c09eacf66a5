"""research: a JAX research framework for multi-task deep-learning models."""

from research import host_memory

__version__ = "0.1.0"

# Only before XLA starts its threads (and before JAX is imported): see research/host_memory.py.
host_memory.restart_with_huge_pages()
host_memory.retain_freed_memory()
