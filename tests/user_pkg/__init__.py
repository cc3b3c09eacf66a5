"""A user's own package, outside research/: a model, a task and a dataset registered from here and
trained through research-train with a config file that imports them (tests/test_user_package.py)."""
