"""Fake of `comfy_api.v0_0_2`, the versioned V3 API the pack's nodes import: `io` (fake_comfy_api_io.py) and
`ComfyExtension`, the object a pack's `comfy_entrypoint()` returns (0.3.64: comfy_api/latest/__init__.py)."""
from abc import ABC, abstractmethod

from . import fake_comfy_api_io as io  # noqa: F401  (re-exported, as the real module does)


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Called when the extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list:
        """The node classes this extension provides."""
