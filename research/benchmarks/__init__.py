"""Reference implementations used by the benchmark command (PyTorch is imported only inside)."""
