"""Client for the seed's Flux HTTP service (`python -m pipeline.services.flux`, default http://localhost:8001).

`POST /generate` renders one image per call. The service answers with the PNG's path on its disk and, when asked
(`transfer="f32"`, the default, or `"png"`), with the image itself, so client and service need not share a
filesystem and, with f32, the client gets the rendered tensor bit for bit (not its 8-bit PNG rounding).
`transfer="path"` reads the PNG from the shared disk, as the seed's client does. Errors carry the service's message.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import requests

from ..config import DEFAULT_FLUX_API_URL, LoraSpec
from ..errors import GenerationFailed, Interrupted, InvalidParameter
from .protocol import GenerationRequest, GenerationResult, StepCallback, StopCheck
from ..services.protocol import answer_detail, json_answer, send_when_free

START_HINT = "start it with `python -m pipeline.services.flux --port 8001` (FLUX_API_URL says where it listens)"


class RemoteFluxClient:
    """Generator backed by the Flux service. LoRAs given here are sent with every request (the service loads
    each file once and only re-weights afterwards). With none given, the service's own default LoRAs apply when
    `use_service_loras` is true (as for the seed's clients), and no LoRA at all when it is false; each image's
    metadata says which LoRAs the service used.

    `defaults` (optional) holds the image settings (width, height, steps, guidance, sampler, scheduler) that
    `request()` and the search node take, as for the ComfyUI generator."""

    def __init__(self, base_url: str = DEFAULT_FLUX_API_URL, timeout: float = 120, loras: Sequence = (),
                 health_timeout: float = 10, use_service_loras: bool = True,
                 defaults: Optional[GenerationRequest] = None, transfer: str = "f32"):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise InvalidParameter("FLUX_API_URL", f"must be an http(s) URL, got {base_url!r}")
        if timeout <= 0:
            raise InvalidParameter("timeout", f"must be > 0 seconds, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.health_timeout = float(health_timeout)
        self.loras = [lora if isinstance(lora, LoraSpec) else LoraSpec.from_dict(lora) for lora in loras]
        self.use_service_loras = bool(use_service_loras)
        if transfer not in ("f32", "png", "path"):
            raise InvalidParameter("transfer", f"must be f32, png or path, got {transfer!r}")
        self.transfer = transfer
        self.defaults = defaults.validate() if defaults is not None else None
        self._http = requests.Session()

    def request(self, prompt: str, seed: int, negative: Optional[str] = None) -> GenerationRequest:
        """A request with this client's image settings (GenerationRequest's own defaults without `defaults`)."""
        if self.defaults is None:
            return GenerationRequest(prompt=prompt, seed=seed, negative=negative)
        return dataclasses.replace(self.defaults, prompt=prompt, seed=seed, negative=negative)

    @classmethod
    def from_settings(cls, settings, **overrides) -> "RemoteFluxClient":
        """FLUX_API_URL / FLUX_LORAS (pipeline.config.Settings) with keyword overrides (timeout, ...)."""
        options = dict(base_url=settings.flux_api_url, loras=settings.flux_loras)
        options.update(overrides)
        return cls(**options)

    def _call(self, method: str, path: str, timeout: float, **kwargs) -> dict:
        url = f"{self.base_url}{path}"
        try:
            # A busy service (503) says when to come back: wait that long, within the client's own timeout.
            response = send_when_free(lambda: self._http.request(method, url, timeout=timeout, **kwargs), timeout)
        except requests.Timeout:
            raise GenerationFailed(f"Flux service at {self.base_url} did not answer {method} {path} within "
                                   f"{timeout:g} s (raise the client timeout for slow cards)") from None
        except requests.ConnectionError as exc:
            raise GenerationFailed(f"Flux service at {self.base_url} is not reachable ({_reason(exc)}); "
                                   f"{START_HINT}") from None
        if response.status_code == 422:
            field, message = _validation_error(response)
            raise InvalidParameter(field, f"rejected by the Flux service at {self.base_url}: {message}")
        if response.status_code == 403:
            raise InvalidParameter("loras", f"refused by the Flux service at {self.base_url}: {answer_detail(response)}")
        return json_answer(response, f"Flux service at {self.base_url}", f"{method} {path}", GenerationFailed)

    def health(self) -> dict:
        return self._call("GET", "/health", self.health_timeout)

    def body(self, request: GenerationRequest) -> dict:
        """The seed's /generate body for one request."""
        return {"prompt": request.prompt, "width": request.width, "height": request.height,
                "steps": request.steps, "guidance": request.guidance, "seed": request.seed,
                "negativePrompt": request.negative, "sampler": request.sampler, "scheduler": request.scheduler,
                "loras": [asdict(lora) for lora in self.loras], "useDefaultLoras": self.use_service_loras,
                **({"returnImage": self.transfer} if self.transfer != "path" else {})}

    def generate(self, requests: Sequence[GenerationRequest], on_step: Optional[StepCallback] = None,
                 should_stop: Optional[StopCheck] = None) -> list[GenerationResult]:
        """One HTTP call per request, in order. Progress is reported per image (all its steps at once);
        should_stop is honoured between images."""
        requests = [r.validate() for r in requests]
        total, done, results = sum(r.steps for r in requests), 0, []
        for request in requests:
            if should_stop is not None and should_stop():
                raise Interrupted(f"image generation stopped after {len(results)}/{len(requests)} images")
            start = time.perf_counter()
            answer = self._call("POST", "/generate", self.timeout, json=self.body(request))
            image = self._image(answer)
            metadata = dict(answer.get("metadata") or {}, backend="remote-flux", service=self.base_url)
            results.append(GenerationResult(image=image, seed=int(metadata.get("seed", request.seed)),
                                            seconds=time.perf_counter() - start,
                                            prompt=answer.get("revisedPrompt") or request.prompt,
                                            metadata={**metadata, "localPath": answer.get("localPath")}))
            done += request.steps
            if on_step is not None:
                on_step(done, total)
        return results

    def _image(self, answer: dict):
        if self.transfer == "path" or "image" not in answer:     # an older service ignores returnImage
            return self._read_png(answer.get("localPath"))
        from ..services.protocol import decode_image

        try:
            return decode_image(answer["image"])
        except ValueError as exc:
            raise GenerationFailed(f"Flux service at {self.base_url} sent an unreadable image: {exc}") from None

    def _read_png(self, local_path: Optional[str]):
        from PIL import Image

        from ..images import pil_to_tensor

        if not local_path:
            raise GenerationFailed(f"Flux service at {self.base_url} answered without a localPath")
        path = Path(local_path)
        if not path.is_file():
            raise GenerationFailed(f"the Flux service saved {local_path}, which is not readable here: the client "
                                   "and the service must share a filesystem (run them on one machine)")
        with Image.open(path) as image:
            return pil_to_tensor(image)

    def describe(self) -> dict:
        info = {"backend": "remote-flux", "url": self.base_url, "timeout": self.timeout, "transfer": self.transfer,
                "loras": [asdict(lora) for lora in self.loras], "use_service_loras": self.use_service_loras}
        if self.defaults is not None:
            info.update({name: getattr(self.defaults, name) for name in
                         ("width", "height", "steps", "guidance", "sampler", "scheduler")})
        return info


def _reason(exc: Exception) -> str:
    text = str(exc)
    return "connection refused" if "refused" in text.lower() else text[:160]


def _validation_error(response) -> tuple[str, str]:
    """FastAPI 422 body: {"detail": [{"loc": ["body", field, ...], "msg": ...}]} -> (field, message)."""
    try:
        items = response.json().get("detail")
    except ValueError:
        items = None
    if isinstance(items, list) and items and isinstance(items[0], dict):
        loc = [str(part) for part in items[0].get("loc", []) if part != "body"]
        messages = "; ".join(f"{'.'.join(str(p) for p in i.get('loc', [])[1:])}: {i.get('msg')}" for i in items)
        return (loc[0] if loc else "request"), messages
    return "request", answer_detail(response)
