"""Where a model comes from, decided without loading it: the answer every part's `sources` module gives.

Each part of pipeline/ that loads models has one `sources` module (generation.sources for Flux and LoRAs,
scoring.sources for CLIP and the aesthetic head) whose `resolve_*` functions turn a user's spec into a
`ModelSource`: what it is, where it lives, and, when it cannot be used, what is missing and how to fix it. The
loaders call them before loading, `search` calls them to reject a bad flag before a multi-gigabyte load, `doctor`
prints them as a checklist, and the nodes call them for their own messages — so all four agree.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from .errors import InvalidParameter, ModelNotFound

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class ModelSource:
    status: str                     # "ok" | "warn" (usable, e.g. downloads on first use) | "fail"
    detail: str                     # one line for a person: what was found, or what is wrong
    fix: str = ""                   # what to do about a warn/fail
    invalid: bool = False           # the spec itself is wrong (search: exit 2 naming the flag)
    form: str = ""                  # how it loads: "folder", "single-file", "hub", "local-dir", "file", "package"
    location: Optional[str] = None  # the resolved path or hub id the loader reads
    error: Optional[Exception] = field(default=None, repr=False)   # the rule's own exception, for loaders

    @property
    def usable(self) -> bool:
        return self.status != FAIL

    def message(self) -> str:
        return self.detail + (f"; {self.fix}" if self.fix else "")

    def raise_if_invalid(self, flag: str) -> None:
        """For flag checks: a spec that can never work is the user's parameter error."""
        if self.status == FAIL and self.invalid:
            raise InvalidParameter(flag, self.message())

    def require(self) -> "ModelSource":
        """For loaders: raise the rule's own exception (or ModelNotFound); return self so a loader can read
        `form`/`location`."""
        if self.status == FAIL:
            raise self.error or ModelNotFound(self.message())
        return self


def ok(detail: str, form: str = "", location: Optional[str] = None) -> ModelSource:
    return ModelSource(OK, detail, form=form, location=location)


def warn(detail: str, fix: str = "", form: str = "", location: Optional[str] = None) -> ModelSource:
    return ModelSource(WARN, detail, fix, form=form, location=location)


def fail(detail: str, fix: str = "", invalid: bool = False, error: Optional[Exception] = None) -> ModelSource:
    return ModelSource(FAIL, detail, fix, invalid, error=error)


# ---- the Hugging Face hub cache, which the diffusers and open_clip loaders read ----------------------------------

GATED = {"black-forest-labs/FLUX.1-dev"}


def hub_offline() -> bool:
    """huggingface_hub's own reading of HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE), which the loaders obey."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_cached(repo_id: str, filenames: Iterable[str]) -> Optional[str]:
    """Path of the first of `filenames` present in the Hugging Face cache for `repo_id`, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def hub_source(repo_id: str, what: str, filenames: Sequence[str], size: str = "") -> ModelSource:
    """A hub id: ok when cached, a warning when the first run will download it, a failure when offline."""
    if hub_cached(repo_id, filenames):
        return ok(f"{what} {repo_id} (in the Hugging Face cache)", form="hub", location=repo_id)
    if hub_offline():
        return fail(f"{what} {repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                    f"download it on a machine with network (`huggingface-cli download {repo_id}`) or unset "
                    "HF_HUB_OFFLINE")
    fix = "the first run downloads it" + (f" ({size})" if size else "")
    if repo_id in GATED:
        fix += "; it is gated: accept its license on huggingface.co and run `huggingface-cli login` first"
    return warn(f"{what} {repo_id}: not in the Hugging Face cache yet", fix, form="hub", location=repo_id)
