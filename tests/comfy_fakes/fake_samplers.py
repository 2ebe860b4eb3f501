"""Fake of comfy.samplers.KSampler: a small flow-matching sampler over the fake Flux model.

Same constructor and `sample` signature as 0.3.64. Sigmas run from 1 to 0 (Flux's flow schedule); "euler" is
deterministic given the noise, the "_ancestral" samplers add fresh noise drawn from `seed` (as ComfyUI's do), and
with cfg == 1 the negative is not evaluated (ComfyUI's cfg-1 optimisation). Every call is recorded in SAMPLE_CALLS.
"""
import torch

SAMPLE_CALLS = []   # dict per sample(): seed, steps, cfg, sampler, scheduler, positive, negative, noise


def _schedule_simple(steps):
    return torch.linspace(1.0, 0.0, steps + 1)


def _schedule_normal(steps):
    return torch.linspace(1.0, 0.0, steps + 1) ** 1.5


SCHEDULER_HANDLERS = {"simple": _schedule_simple, "normal": _schedule_normal, "beta": _schedule_simple}
SCHEDULER_NAMES = list(SCHEDULER_HANDLERS)
SAMPLER_NAMES = ["euler", "euler_ancestral", "heun", "dpmpp_2m"]


def _first_cond(conditioning):
    cond, options = conditioning[0]
    return cond, options.get("pooled_output"), options.get("guidance", 3.5)


class KSampler:
    SCHEDULERS = SCHEDULER_NAMES
    SAMPLERS = SAMPLER_NAMES

    def __init__(self, model, steps, device, sampler=None, scheduler=None, denoise=None, model_options={}):
        self.model = model
        self.device = device
        self.scheduler = scheduler if scheduler in self.SCHEDULERS else self.SCHEDULERS[0]
        self.sampler = sampler if sampler in self.SAMPLERS else self.SAMPLERS[0]
        self.steps = steps
        self.denoise = denoise
        self.model_options = model_options
        sigmas = SCHEDULER_HANDLERS[self.scheduler](steps)
        if denoise is not None and denoise < 1.0:
            sigmas = sigmas * denoise
        self.sigmas = sigmas

    def _velocity(self, x, sigma, positive, negative, cfg):
        cond, pooled, guidance = _first_cond(positive)
        v = self.model.run(x, sigma, cond, pooled, guidance)
        if abs(cfg - 1.0) > 1e-9:
            n_cond, n_pooled, n_guidance = _first_cond(negative)
            v_neg = self.model.run(x, sigma, n_cond, n_pooled, n_guidance)
            v = v_neg + cfg * (v - v_neg)
        return v

    def sample(self, noise, positive, negative, cfg, latent_image=None, start_step=None, last_step=None,
               force_full_denoise=False, denoise_mask=None, sigmas=None, callback=None, disable_pbar=False, seed=None):
        SAMPLE_CALLS.append({"seed": seed, "steps": self.steps, "cfg": cfg, "sampler": self.sampler,
                             "scheduler": self.scheduler, "positive": positive, "negative": negative,
                             "noise": noise.clone()})
        sigmas = self.sigmas if sigmas is None else sigmas
        x = sigmas[0] * noise + (1.0 - sigmas[0]) * latent_image
        generator = torch.Generator().manual_seed(seed if seed is not None else 0)
        total_steps = len(sigmas) - 1
        for i in range(total_steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            v = self._velocity(x, sigma, positive, negative, cfg)
            denoised = x - sigma * v
            x = x + (sigma_next - sigma) * v
            if self.sampler.endswith("_ancestral") and sigma_next > 0:
                x = x + 0.1 * sigma_next * torch.randn(x.shape, generator=generator)
            if callback is not None:
                callback(i, denoised, x, total_steps)
        return x
