"""research: a JAX research framework for multi-task deep-learning models."""

from research import host_memory

__version__ = "0.1.0"

# Opt-in, and only before XLA starts its threads: see research/host_memory.py.
host_memory.retain_freed_memory()
