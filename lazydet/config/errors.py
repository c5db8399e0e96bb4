"""ConfigError: the one exception type for bad recipes, overrides and configs.

Every message is a single line naming the file, key or value at fault, because researchers read these
errors in crowded training logs.
"""


def one_line(text: object, limit: int = 300) -> str:
    """Collapse any message to one line (and cap its length) so it can be embedded in another message."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class ConfigError(ValueError):
    """A config problem. Subclasses ValueError; the message is always one line."""

    def __init__(self, message: object):
        super().__init__(one_line(message, limit=2000))
