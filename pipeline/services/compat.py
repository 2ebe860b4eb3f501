"""What the seed's clients send to the Flux service, translated to what the diffusers backend can do.

The seed's UI offers sampler names (euler_a, dpmpp_2m, ddim, lcm...) and sigma schedules (beta...) that the
diffusers Flux pipeline does not have: it has one sampler (flow-matching Euler) and the schedules in
`diffusers_flux.SCHEDULERS`. A name the backend lacks is never an error here: it is replaced by the nearest thing
the backend has (or dropped), and the answer's `metadata.adjusted` says what was asked and what was used, so the
client can see it. Refusing them would make every request from the seed's UI fail.
"""
from __future__ import annotations

from typing import Optional

from ..generation.diffusers_flux import SAMPLERS, SCHEDULERS

# Every sampler is replaced by flow-matching Euler, the only one the Flux pipeline has; these are the names known
# to be samplers (the seed's UI and service, ComfyUI's KSampler), so the note can say "mapped" instead of "unknown".
KNOWN_SAMPLERS = frozenset({
    "euler", "euler_a", "euler_ancestral", "euler_cfg_pp", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_sde_gpu",
    "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "ddim", "uni_pc", "uni_pc_bh2", "pndm", "dpmsolver", "dpmsolver++", "unipc", "res_multistep",
    "gradient_estimation", "er_sde", "seeds_2", "seeds_3",
})
# Schedules the backend lacks -> the nearest one it has. "beta" needs scipy in diffusers; the model's own schedule
# ("simple") is the closest that always works. The seed's service also took a sampler name as `scheduler`.
SCHEDULE_ALIASES = {"beta": "simple", "sgm_uniform": "simple", "ddim_uniform": "simple", "linear_quadratic": "simple",
                    "kl_optimal": "simple", "default": "simple", "polyexponential": "exponential"}


def adjust_sampler(name: Optional[str]) -> tuple[Optional[str], Optional[dict]]:
    """(sampler to use, note or None). Empty means the backend's default and needs no note."""
    if not name or name in SAMPLERS:
        return name or None, None
    kind = "mapped" if name.lower() in KNOWN_SAMPLERS else "unknown name, replaced"
    return SAMPLERS[0], {"field": "sampler", "requested": name, "used": SAMPLERS[0],
                         "reason": f"{kind}: the diffusers Flux backend has one sampler, flow-matching "
                                   f"{SAMPLERS[0]}"}


def adjust_scheduler(name: Optional[str]) -> tuple[Optional[str], Optional[dict]]:
    """(schedule to use, note or None)."""
    if not name or name in SCHEDULERS:
        return name or None, None
    key = name.lower()
    if key in SCHEDULERS:
        return key, None
    used = SCHEDULE_ALIASES.get(key, "simple")
    why = ("closest schedule the backend has" if key in SCHEDULE_ALIASES
           else "sampler name given as a schedule; the model's own schedule is used" if key in KNOWN_SAMPLERS
           else "unknown name; the model's own schedule is used")
    return used, {"field": "scheduler", "requested": name, "used": used,
                  "reason": f"{why} (available: {', '.join(SCHEDULERS)})"}
