"""Expected errors: problems with the user's input or environment, each with one clear message.

The commands (research.cli.app.run_app) print an `ExpectedError` as one line `error: ...` and
exit with status 2 (the traceback only with --traceback); any other exception is a bug and keeps
its traceback (status 1). Every message names the problem and the way out.
"""
from __future__ import annotations

# The exit status of a run stopped by SIGTERM / Ctrl-C after saving a checkpoint (EX_TEMPFAIL:
# run the same command again to resume; a SLURM job can requeue on it).
EXIT_PREEMPTED = 75


class ExpectedError(Exception):
  """Base of the errors a user can fix: the message says what is wrong and what to do."""


class ConfigError(ExpectedError, ValueError):
  """A configuration problem; the message names the offending key."""


class WorkdirBusyError(ExpectedError):
  """Another live process holds the workdir's lock; the message names its host and pid."""


class CheckpointError(ExpectedError):
  """No usable checkpoint (all unreadable, or not matching this model)."""


class MissingPackageError(ExpectedError, ImportError):
  """A package the run needs (e.g. at evaluation) is not installed; the message has the command."""


class MissingRunError(ExpectedError, FileNotFoundError):
  """A run this run needs (e.g. the classifier of a GAN's metrics) does not exist yet."""


class DataRecordError(ExpectedError):
  """A record of a dataset file cannot be read; the message names the file and record index."""


class NonFiniteLossError(ExpectedError, FloatingPointError):
  """The training loss became NaN/Inf at `step`; the message names the steps and the kept checkpoint."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step
