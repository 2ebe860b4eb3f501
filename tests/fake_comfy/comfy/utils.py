"""Fake of comfy.utils: ProgressBar with the global hook ComfyUI installs (main.py sets it to report progress
and to raise on interrupt at every update)."""
PROGRESS_BAR_HOOK = None
PROGRESS_UPDATES = []  # (value, total, preview, node_id), recorded for tests


def set_progress_bar_global_hook(function):
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        PROGRESS_UPDATES.append((self.current, self.total, preview, self.node_id))
        if self.hook is not None:
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
    if tensor.shape[dim] > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if tensor.shape[dim] < batch_size:
        repeats = [1] * tensor.dim()
        repeats[dim] = -(-batch_size // tensor.shape[dim])
        return tensor.repeat(*repeats).narrow(dim, 0, batch_size)
    return tensor
