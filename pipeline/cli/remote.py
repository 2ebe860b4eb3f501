"""`search --flux-url URL --vision-url URL`: render with the Flux service and score with the vision service instead
of loading the models in this process.

Defaults come from the seed's environment variables, read so that nobody is moved to the services by accident:
  - Flux:   FLUX_API_URL set, and IMAGE_PROVIDER unset or `flux`        -> the Flux service at FLUX_API_URL
  - vision: LOCAL_VISION_API_URL set, and VISION_PROVIDER unset or `local` -> the vision service at that URL
With no such variable the models load in this process, as before. `IMAGE_PROVIDER=flux` alone keeps the in-process
backend (this project's docs have long used it for that). `--flux-url in-process` / `--vision-url in-process`
override the environment the other way.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

from ..errors import InvalidParameter

IN_PROCESS = "in-process"


def add_arguments(group) -> None:
    group.add_argument("--flux-url", dest="flux_url", metavar="URL",
                       help="render with the Flux service at URL (python -m pipeline.services.flux) instead of "
                            "loading Flux here; default: FLUX_API_URL when set; 'in-process' to force local")
    group.add_argument("--vision-url", dest="vision_url", metavar="URL",
                       help="score with the vision service at URL (python -m pipeline.services.vision) instead of "
                            "loading CLIP here; default: LOCAL_VISION_API_URL when set; 'in-process' to force local")


def _check_url(value: str, flag: str) -> Optional[str]:
    if value == IN_PROCESS:
        return None
    if not value.startswith(("http://", "https://")) or len(value) <= len("http://"):
        raise InvalidParameter(flag, f"must be an http(s) URL such as http://localhost:8001, or '{IN_PROCESS}'; "
                                     f"got {value!r}")
    return value.rstrip("/")


def service_urls(args, recorded: Mapping, environ: Optional[Mapping[str, str]] = None) -> dict:
    """{"flux_url": URL or None, "vision_url": URL or None}: a flag wins, then (on --resume) what the run used,
    then the environment (see the module docstring)."""
    environ = os.environ if environ is None else environ
    urls = {}
    for key, url_var, provider_var, service_value in (("flux_url", "FLUX_API_URL", "IMAGE_PROVIDER", "flux"),
                                                      ("vision_url", "LOCAL_VISION_API_URL", "VISION_PROVIDER",
                                                       "local")):
        flag = getattr(args, key, None)
        if flag is not None:
            urls[key] = _check_url(flag, key)
        elif key in recorded:
            urls[key] = _check_url(str(recorded[key]), key)
        elif environ.get(url_var) and environ.get(provider_var, service_value) == service_value:
            urls[key] = _check_url(environ[url_var], url_var)
        else:
            urls[key] = None
    return urls


def connect(settings: dict, say) -> tuple[Optional[object], Optional[object]]:
    """(generator, scorer) for the services named in `settings`, each checked with GET /health first so that a
    service that is down fails the run before anything loads; None where the model runs in this process."""
    generator = scorer = None
    if settings.get("vision_url"):
        from ..scoring.remote import RemoteScorer

        caption_client = settings.get("caption_client")
        scorer = RemoteScorer(settings["vision_url"], caption_client=caption_client,
                              scorers=settings.get("scorers"))
        info = scorer.health()
        say(f"vision service {scorer.base_url}: {', '.join(map(str, info.get('models', [])))} ready")
    if settings.get("flux_url"):
        from ..generation.remote_flux import RemoteFluxClient

        generator = RemoteFluxClient(settings["flux_url"], loras=settings.get("loras") or (), timeout=900)
        info = generator.health()
        say(f"Flux service {generator.base_url}: {info.get('model')} on {info.get('device')} ready")
    return generator, scorer


SERVICES = {"flux": ("Flux service", "python -m pipeline.services.flux --port 8001", "--flux-url / FLUX_API_URL"),
            "vision": ("vision service", "python -m pipeline.services.vision --port 8002",
                       "--vision-url / LOCAL_VISION_API_URL")}


def inspect_service(kind: str, url: str):
    """A `doctor` line for a service: GET /health, what it serves and how busy it is."""
    import requests

    from ..sources import fail, ok

    name, start, setting = SERVICES[kind]
    try:
        response = requests.get(f"{url}/health", timeout=5)
        info = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError) as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
        return fail(f"{name} at {url} is not reachable ({reason})", f"start it (`{start}`) or fix {setting}")
    if not isinstance(info, dict) or not info.get("model_loaded"):
        return fail(f"{name} at {url} answered /health with HTTP {response.status_code} and no loaded model",
                    f"is {url} this project's {name}? (`{start}`)")
    models = info.get("model") or ", ".join(map(str, info.get("models") or []))
    queue = info.get("queue") or {}
    return ok(f"{name} at {url}: {models} on {info.get('device')}, {queue.get('running', 0)} running, "
              f"{queue.get('waiting', 0)} waiting")
