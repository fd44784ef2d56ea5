"""Typed errors. Every message names the file, key, shape or value at fault."""


class StylemotionError(Exception):
    """Base class of every error stylemotion raises on purpose."""


class ConfigError(StylemotionError, ValueError):
    """A configuration value is invalid (names the field and the value)."""


class ShapeError(StylemotionError, ValueError):
    """A tensor has the wrong shape (names the tensor, the dimension and both sizes)."""


class CheckpointError(StylemotionError):
    """A weight file cannot be read or does not describe a supported network (names the file and key)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asked for a global that the restricted unpickler does not allow (it may try to run code)."""


class MissingDependencyError(StylemotionError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


class InputError(StylemotionError, ValueError):
    """A user-supplied input file or value is unusable (names it)."""


class ExportError(StylemotionError):
    """An export failed or its graph did not pass the checks (names the network and the check)."""


class EngineError(StylemotionError):
    """An engine cannot be built, loaded or run (names the file, backend and what failed)."""


class EngineBuildError(EngineError):
    """Building an engine (e.g. a TensorRT plan) failed (names the file and the builder's message)."""
