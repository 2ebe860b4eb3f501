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
