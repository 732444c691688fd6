"""The error type of bad user input, below every module that raises it."""


class ConfigError(ValueError):
  """Bad user input: the message is one line naming the value and what is accepted."""
