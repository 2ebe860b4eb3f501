"""Fake of ComfyUI's latent_preview.prepare_callback: a ProgressBar updated after every sampler step.

Real ComfyUI also renders a preview image when a preview method is enabled; its default is no preview, which is
what this fake reproduces (preview None). The ProgressBar's global hook is where ComfyUI reports progress and
raises on interrupt, so the pack's progress and interruption both go through here.
"""
from . import fake_utils


def prepare_callback(model, steps, x0_output_dict=None):
    pbar = fake_utils.ProgressBar(steps)

    def callback(step, x0, x, total_steps):
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        pbar.update_absolute(step + 1, total_steps, None)

    return callback
