"""The one exception type that the CLI turns into a short, clear message (no traceback)."""


class ConfigError(ValueError):
    """Bad user input: names the key, file or value at fault and says how to fix it."""
