"""`run_app(main)`: absl's app.run for every command, with one clear line for expected errors.

Exit status:
  0    finished
  1    failed with an unexpected error (a bug: its traceback is printed)
  2    failed with an expected error (config, dataset, workdir, checkpoint, disk full, missing
       package): one line `error: ...` naming the problem and the way out; --traceback adds the
       traceback
  75   preempted (EX_TEMPFAIL): SIGTERM or Ctrl-C saved a checkpoint; run the same command to
       resume (a SLURM job can requeue on it)
  130  stopped at once by a second Ctrl-C
"""
from __future__ import annotations

import ast
import difflib
import errno
import os
import sys
import traceback
from typing import Any, Callable, List, Optional, Sequence

from absl import app, flags

from research.core.errors import EXIT_PREEMPTED, ConfigError, ExpectedError

EXIT_FAILED = 1
EXIT_EXPECTED_ERROR = 2
EXIT_INTERRUPTED = 130
__all__ = ["EXIT_EXPECTED_ERROR", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_PREEMPTED", "run_app"]

flags.DEFINE_bool("traceback", False, "Print the traceback of expected errors too.")

# OSError numbers that are the environment's fault, not the program's: reported in one line.
_EXPECTED_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def _expected_types() -> tuple:
  from research.data.datasets import DatasetNotPreparedError
  return (ExpectedError, DatasetNotPreparedError)


def is_expected(error: BaseException) -> bool:
  """Whether `error` is the user's or the environment's to fix (reported without a traceback)."""
  if isinstance(error, _expected_types()):
    return True
  return isinstance(error, OSError) and error.errno in _EXPECTED_ERRNOS


def message(error: BaseException) -> str:
  """The one-line (or few-line, for diffs) report of an expected error."""
  if isinstance(error, OSError) and error.errno == errno.ENOSPC:
    where = f" writing {error.filename}" if error.filename else ""
    return (f"disk full{where}: {os.strerror(error.errno)}. Free space (checkpoints/ of old runs "
            "are the largest files) and run the same command to resume from the last checkpoint")
  if isinstance(error, OSError) and error.errno in _EXPECTED_ERRNOS:
    return f"{os.strerror(error.errno)}: {error.filename or error}"
  return str(error)


def _override_error(argv: Sequence[str], error: BaseException) -> Optional[ConfigError]:
  """The ConfigError for a `--config.<path>=...` override whose key the config does not have."""
  from research.core.config import load_config_file
  config_path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if config_path is None and "--config" in argv and argv.index("--config") + 1 < len(argv):
    config_path = argv[argv.index("--config") + 1]
  if config_path is None:
    return None
  try:
    config = load_config_file(config_path.partition(":")[0])
  except Exception:  # noqa: BLE001  (the file itself is broken: reported by the caller)
    return None
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0]
    node = config
    for depth, key in enumerate(path.split(".")):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if key not in keys:
        where = ".".join(path.split(".")[:depth + 1])
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"unknown config key {where!r}{hint} in {arg}; known keys here: "
                           f"{', '.join(sorted(keys))}")
      node = node[key]
  return None


# Config sections whose keys are not known in advance (XLA's option names): `--config.SECTION.KEY=V`
# may add a KEY the config file does not set, where ml_collections only overrides existing keys.
FREE_SECTIONS = ("compiler_options",)


def _override_value(text: str) -> Any:
  """A command-line override's value: true/false (any case) as bools, Python literals as such,
  anything else as the string."""
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _take_free_section_overrides(argv: List[str]) -> tuple[List[str], List[tuple[str, str, Any]]]:
  """argv less its `--config.<free section>.KEY=V` (or `... V`) overrides, and those as
  (section, KEY, value), in order."""
  rest, taken = [], []
  args = iter(argv)
  for arg in args:
    name, eq, text = arg.partition("=")
    section, _, key = name[len("--config."):].partition(".") if name.startswith("--config.") else ("", "", "")
    if section not in FREE_SECTIONS or not key or "." in key:
      rest.append(arg)
      continue
    if not eq:
      text = next(args, None)
      if text is None:
        raise ConfigError(f"{arg} needs a value: {arg}=VALUE")
    taken.append((section, key, _override_value(text)))
  return rest, taken


def _parse_flags(argv: List[str]) -> List[str]:
  """absl's flag parsing, with config-file and override problems as ConfigError; the
  FREE_SECTIONS' overrides are set after it."""
  argv, free = _take_free_section_overrides(argv)
  if free:  # ml_collections reads the overrides' names from sys.argv itself
    sys.argv = _take_free_section_overrides(sys.argv)[0]
  remaining = _parse_absl_flags(argv)
  if free:
    if "config" not in flags.FLAGS or flags.FLAGS.config is None:
      raise ConfigError(f"--config.{free[0][0]}.{free[0][1]} needs --config")
    config = flags.FLAGS.config
    with config.unlocked():
      for section, key, value in free:
        if section not in config:
          raise ConfigError(f"unknown config key {section!r} in --config.{section}.{key}: this config has "
                            f"no {section} section")
        config[section][key] = value
  return remaining


def _parse_absl_flags(argv: List[str]) -> List[str]:
  """flags.FLAGS(argv), its errors as ConfigError where they are the config's or an override's."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    cause = e.__cause__ or e.__context__
    if isinstance(cause, SyntaxError):
      raise ConfigError(f"config file {cause.filename}, line {cause.lineno}: {cause.msg}") from e
    raise ConfigError(f"{e}. See --helpfull for the flags") from e
  except SyntaxError as e:
    raise ConfigError(f"config file {e.filename}, line {e.lineno}: {e.msg}") from e
  except (AttributeError, KeyError) as e:
    override = _override_error(argv, e)
    if override is not None:
      raise override from e
    raise


def _exit_without_teardown(code: Optional[int]) -> None:
  """Ends the process now with `code`, after flushing the logs and standard streams.

  For a command whose work is all written and closed when `main` returns: the interpreter's
  teardown of JAX's CPU client, its compiled programs and thread pools is C code that took
  ~0.5 s of LeNet-5's default job. A multi-process run exits normally (JAX's atexit handler
  shuts the distributed runtime down).
  """
  import jax  # pylint: disable=g-import-not-at-top  (imported by every command that asks for this)
  if jax.process_count() > 1:
    sys.exit(code)
  logging_module = sys.modules.get("logging")
  if logging_module is not None:
    logging_module.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code or 0)


def run_app(main: Callable[[List[str]], Optional[int]],
            prepare_argv: Optional[Callable[[List[str]], List[str]]] = None,
            skip_teardown: bool = False) -> None:
  """Runs `main` as absl's app.run does, mapping its end onto the exit codes above.

  `main` returns None / 0 (finished) or an exit code (e.g. EXIT_PREEMPTED). `prepare_argv`
  rewrites sys.argv first (e.g. resolving a shipped config's name); its errors are reported too.
  skip_teardown: when `main` returns, exit without the interpreter's teardown
  (`_exit_without_teardown`); for console entry points only, never in a process that goes on.
  """
  argv = list(sys.argv)
  show_traceback = "--traceback" in argv or "--traceback=true" in argv
  try:
    if prepare_argv is not None:
      argv = prepare_argv(argv)
    try:
      app.run(main, argv=argv, flags_parser=_parse_flags)
    except SystemExit as e:
      if skip_teardown and (e.code is None or isinstance(e.code, int)):
        _exit_without_teardown(e.code)
      raise
  except KeyboardInterrupt:
    if show_traceback:
      traceback.print_exc()
    print("error: interrupted: stopped at once, without saving (the last checkpoint is kept)",
          file=sys.stderr, flush=True)
    sys.exit(EXIT_INTERRUPTED)
  except Exception as e:  # noqa: BLE001  (unexpected errors are re-raised with their traceback)
    if not is_expected(e):
      raise
    if show_traceback:
      traceback.print_exc()
    print(f"error: {message(e)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_EXPECTED_ERROR)
