"""Name -> constructor registries, so configs pick models and tasks by name.

Usage (the built-in models and tasks register themselves this way; so does a user's own package):
    from research.core.registry import MODELS, TASKS

    @MODELS.register("my_net")            # config.model.name = "my_net"
    class MyNet(nn.Module): ...           # a flax.linen module: __call__(images, train)

    @TASKS.register("my_task")            # config.task.name = "my_task"
    class MyTask(research.tasks.base.Task): ...

    model_cls = MODELS.get("my_net")   # KeyError naming the known entries if missing

A run finds a user's entries once the module defining them is imported: the user's `--config` file
imports it (`import my_package.models`) before naming them. Datasets are TFDS builders
(`research.data.datasets.register_dataset` for one generated on first use).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, TypeVar

T = TypeVar("T")


class Registry:
  """A named mapping from strings to constructors (classes or functions)."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, Any] = {}

  def register(self, name: str, **defaults: Any) -> Callable[[T], T]:
    """Decorator: registers `obj` under `name`.

    `defaults` are keyword arguments bound at construction time, so one class can be
    registered under several names (e.g. "resnet18" and "resnet50" with different
    stage sizes).
    """

    def decorator(obj: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is already registered")
      if defaults:
        self._entries[name] = _Bound(obj, defaults)
      else:
        self._entries[name] = obj
      return obj

    return decorator

  def get(self, name: str) -> Any:
    if name not in self._entries:
      known = ", ".join(sorted(self._entries))
      raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
    return self._entries[name]

  def build(self, name: str, **kwargs: Any) -> Any:
    """Constructs the entry `name` with `kwargs` (overriding registered defaults)."""
    return self.get(name)(**kwargs)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(sorted(self._entries))

  def names(self) -> list[str]:
    return sorted(self._entries)


class _Bound:
  """A constructor with registered default keyword arguments."""

  def __init__(self, fn: Callable[..., Any], defaults: Dict[str, Any]):
    self.fn = fn
    self.defaults = defaults

  def __call__(self, **kwargs: Any) -> Any:
    return self.fn(**{**self.defaults, **kwargs})

  def __repr__(self) -> str:
    return f"{getattr(self.fn, '__name__', self.fn)}(**{self.defaults})"


MODELS = Registry("model")
TASKS = Registry("task")
BACKBONES = Registry("backbone")
