"""Client for the vision service (`python -m pipeline.services.vision`, default http://localhost:8002): a scorer
for the beam search and the nodes that runs CLIP and the aesthetic head in another process or on another machine.

`score` sends the whole batch in one `POST /score` with the image data itself (no shared filesystem needed): an
image whose values are exact 8-bit levels (anything read from a PNG, as RemoteFluxClient's images are) goes as a
lossless PNG, any other as raw float32. Either way the service scores the very tensor given here, so the numbers
equal the local Scorer's with the same models. Captions, when asked for, come from a local Ollama vision model
(`caption_client`), as with the local scorer.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import requests

from .clip import image_groups
from ..config import DEFAULT_VISION_API_URL
from ..errors import InvalidParameter, ScoringFailed
from ..services.protocol import answer_detail, encode_image, is_8bit, json_answer, send_when_free  # noqa: F401  (is_8bit: part of this module's API)
from .scorer import ImageScore, caption_images, caption_prompt_for
from .specs import DEFAULT_SCORER, is_default, parse_scorer_specs

START_HINT = ("start it with `python -m pipeline.services.vision --port 8002` (LOCAL_VISION_API_URL or "
              "--vision-url say where it listens)")


class RemoteScorer:
    """Scorer backed by the vision service, with pipeline.scoring.Scorer's `score`, `analyze`, `describe` and
    `release`."""

    def __init__(self, base_url: str = DEFAULT_VISION_API_URL, timeout: float = 120, health_timeout: float = 10,
                 caption_client=None, scorers: Optional[Sequence[str]] = None):
        if not base_url or not str(base_url).startswith(("http://", "https://")):
            raise InvalidParameter("LOCAL_VISION_API_URL", f"must be an http(s) URL, got {base_url!r}")
        if timeout <= 0:
            raise InvalidParameter("timeout", f"must be > 0 seconds, got {timeout}")
        self.base_url = str(base_url).rstrip("/")
        self.timeout, self.health_timeout = float(timeout), float(health_timeout)
        self.caption_client = caption_client
        # The scorers the total ranks by (specs.py); the service must have been started with them.
        self.specs = parse_scorer_specs(scorers)
        self.ranked_by = () if is_default(self.specs) else tuple(spec.name for spec in self.specs)
        self.after_use = "keep"          # the service manages its own memory
        self._service: Optional[dict] = None
        self._http = requests.Session()

    def _call(self, method: str, path: str, timeout: float, **kwargs) -> dict:
        url = f"{self.base_url}{path}"
        try:
            response = send_when_free(lambda: self._http.request(method, url, timeout=timeout, **kwargs), timeout)
        except requests.Timeout:
            raise ScoringFailed(f"vision service at {self.base_url} did not answer {method} {path} within "
                                f"{timeout:g} s") from None
        except requests.ConnectionError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else str(exc)[:160]
            raise ScoringFailed(f"vision service at {self.base_url} is not reachable ({reason}); {START_HINT}") \
                from None
        if response.status_code == 404 and path == "/score":
            raise ScoringFailed(f"the service at {self.base_url} has no POST /score (is it this project's vision "
                                "service, and a recent one?)")
        if response.status_code == 422 and answer_detail(response).startswith("scorers: "):
            raise InvalidParameter("scorer", f"the vision service at {self.base_url} answered: "
                                             f"{answer_detail(response)[len('scorers: '):]}")
        if response.status_code == 422:
            raise InvalidParameter("images", f"rejected by the vision service at {self.base_url}: "
                                             f"{answer_detail(response)}")
        return json_answer(response, f"vision service at {self.base_url}", f"{method} {path}", ScoringFailed)

    def health(self) -> dict:
        self._service = self._call("GET", "/health", self.health_timeout)
        return self._service

    def score(self, images, text: Union[str, Sequence[str]], captions: bool = False) -> list[ImageScore]:
        flat = [image for group in image_groups(images) for image in group]
        texts = [text] if isinstance(text, str) else list(text or [])
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise InvalidParameter("text", "the prompt to score against is empty")
        if len(texts) not in (1, len(flat)):
            raise InvalidParameter("text", f"got {len(texts)} prompts for {len(flat)} images; give one, or one per "
                                           "image")
        if captions and self.caption_client is None:
            raise InvalidParameter("captions", "no vision LLM is configured for captions (caption_client)")
        body = {"images": [encode_image(image) for image in flat]}
        body.update({"prompt": texts[0].strip()} if len(texts) == 1 else {"prompts": [t.strip() for t in texts]})
        if self.ranked_by:
            body["scorers"] = [str(spec) for spec in self.specs]
        answer = self._call("POST", "/score", self.timeout, json=body)
        rows = answer.get("scores")
        if not isinstance(rows, list) or len(rows) != len(flat):
            raise ScoringFailed(f"vision service at {self.base_url} answered {len(rows or [])} scores for "
                                f"{len(flat)} images")
        if isinstance(answer.get("scorer"), dict):
            self._service = {**(self._service or {}), "scorer": answer["scorer"]}
        notes: list[Optional[str]] = [None] * len(flat)
        if captions:
            notes = caption_images(self.caption_client, flat, caption_prompt_for(texts[0]))
        names = [name for name in self.ranked_by if name != DEFAULT_SCORER]
        if any(name not in row for row in rows for name in names):
            raise ScoringFailed(f"vision service at {self.base_url} gave no {', '.join(names)} scores; start it with "
                                + " ".join(f"--scorer {spec}" for spec in self.specs if spec.name in names))
        return [ImageScore(alignment=float(row["alignment"]), aesthetic=float(row["aesthetic"]), caption=note,
                           named={name: float(row[name]) for name in names}, ranked_by=self.ranked_by)
                for row, note in zip(rows, notes)]

    def analyze(self, image, prompt: str) -> dict:
        from .scorer import describe_score

        kind = ((self._service or {}).get("scorer") or {}).get("aesthetic_kind", "laion")
        return describe_score(self.score(image, prompt)[0], kind)

    def load(self) -> None:
        self._call("POST", "/load", self.timeout)

    def release(self, mode: str = "offload") -> None:
        """The service keeps its models loaded for its other clients; nothing to free here."""

    @property
    def loaded(self) -> bool:
        return True

    def describe(self) -> dict:
        info = {"backend": "remote-vision", "url": self.base_url, "captions": self.caption_client is not None,
                "scorers": [str(spec) for spec in self.specs]}
        service = (self._service or {}).get("scorer")
        if isinstance(service, dict):
            info.update({key: service[key] for key in ("clip_model", "aesthetic_model", "aesthetic_kind", "device",
                                                       "dtype") if key in service})
        return info
