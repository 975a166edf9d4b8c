"""The errors tinydg raises on bad input.

Every problem a user can cause (a damaged checkpoint, an inconsistent config, an impossible
setting, a prompt that does not fit) raises one of these with a message that names the problem.
They subclass ValueError so that generic callers can still catch them.
"""


class TinyDGError(ValueError):
    """Base class of every error tinydg raises on bad input."""


class CheckpointError(TinyDGError):
    """A checkpoint folder or file is missing, damaged, or does not match its config."""


class ConfigError(TinyDGError):
    """config.json / generation_config.json is inconsistent or unsupported."""


class InputError(TinyDGError):
    """Arguments to encode / denoise / generate are out of range or of the wrong shape."""
