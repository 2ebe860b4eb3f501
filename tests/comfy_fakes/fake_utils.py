"""Fake of comfy.utils: ProgressBar with the global hook ComfyUI installs (main.py sets it to report progress
and to raise on interrupt at every update)."""
import torch

PROGRESS_BAR_HOOK = None
PROGRESS_UPDATES = []  # (value, total, preview, node_id), recorded for tests


def set_progress_bar_global_hook(function):
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    """Contract: update_absolute(value, total, preview) clamps value to total, records it and calls the hook that
    was installed when the bar was made (ComfyUI's hook raises on interrupt)."""

    def __init__(self, total, node_id=None):
        self.total, self.current, self.node_id = total, 0, node_id
        self.hook = PROGRESS_BAR_HOOK

    def update_absolute(self, value, total=None, preview=None):
        self.total = self.total if total is None else total
        self.current = min(value, self.total)
        PROGRESS_UPDATES.append((self.current, self.total, preview, self.node_id))
        if self.hook:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value):
        self.update_absolute(self.current + value)


# ComfyUI's --disable-progress-bar sets this to False; common_ksampler passes `disable_pbar=not PROGRESS_BAR_ENABLED`.
PROGRESS_BAR_ENABLED = True


def set_progress_bar_enabled(enabled):
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def load_torch_file(ckpt, safe_load=False, device=None, return_metadata=False):
    """safetensors files only (all the pack's tests write); same signature and return shape as 0.3.64."""
    import safetensors

    device = device or "cpu"
    with safetensors.safe_open(ckpt, framework="pt", device=str(device)) as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    return (sd, metadata) if return_metadata else sd


def repeat_to_batch_size(tensor, batch_size, dim=0):
    """`tensor` cycled or cut along `dim` to exactly `batch_size` entries."""
    index = torch.arange(batch_size) % tensor.shape[dim]
    return tensor.index_select(dim, index)
