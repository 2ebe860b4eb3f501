"""Exception types shared by the whole pack.

Every failure a user can meet is one of these, with a message that says what to do about it. Nodes let them
propagate (ComfyUI shows the message); the CLI turns them into exit codes (InvalidParameter -> 2, others -> 1).
"""
from typing import Mapping, Optional


class PromptBeamError(Exception):
    """Base class: a failure with a message meant for the user."""


class InvalidParameter(PromptBeamError, ValueError):
    """A parameter is out of range or malformed. Raised before any work starts."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"{name}: {message}")

    @staticmethod
    def bare(exc: Exception) -> str:
        """An InvalidParameter's message without its leading "name: ", for a caller that names the parameter
        itself (other exceptions: their message as is)."""
        text = str(exc)
        name = getattr(exc, "name", None)
        return text[len(name) + 2:] if name and text.startswith(f"{name}: ") else text


class ModelNotFound(PromptBeamError, FileNotFoundError):
    """A model file, folder or hub id could not be found or loaded."""


class GenerationFailed(PromptBeamError, RuntimeError):
    """An image could not be rendered (backend error, OOM, service down).

    `completed` maps request positions to the GenerationResults that were rendered before the failure, so a
    caller retrying the rest does not render those again.
    """

    def __init__(self, message: str, completed: Optional[Mapping[int, object]] = None):
        self.completed = dict(completed or {})
        super().__init__(message)


class ScoringFailed(PromptBeamError, RuntimeError):
    """Images could not be scored."""


class Interrupted(PromptBeamError):
    """The user asked the run to stop (ComfyUI interrupt, Ctrl-C)."""
