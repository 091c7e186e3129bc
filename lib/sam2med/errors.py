"""User-facing errors: each carries one readable line, shown as is by the CLI and the server."""


class Sam2MedError(Exception):
    """Base class for errors caused by user input or the environment, never by a bug."""


class InputError(Sam2MedError):
    """An image or label file that cannot be read, or whose content is unusable."""


class PromptError(Sam2MedError):
    """A seed mask, slice range, axis, label subset or click prompt that does not fit the image."""


class CheckpointError(Sam2MedError):
    """An unknown model name or a checkpoint that is missing, cannot be downloaded or cannot be loaded."""


class DeviceError(Sam2MedError):
    """A compute device that was asked for but is not available."""
