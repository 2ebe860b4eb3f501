"""Small deterministic collaborators for beam-search property and fault tests, and tests of them.

They do real work, only much faster than the models: HashGenerator renders an image whose colours and
pattern come from a hash of (prompt, seed) with tensor maths; StatsScorer scores images from their pixel
statistics (alignment from the red channel, aesthetic from the green channel and contrast); FastOps answers the
prompt operations deterministically from their inputs. The end-to-end tests use the real models instead.
"""
from __future__ import annotations

import hashlib
import threading
from typing import Sequence

import torch

from pipeline.errors import GenerationFailed, Interrupted, ScoringFailed
from pipeline.generation.protocol import GenerationResult
from pipeline.scoring.scorer import ImageScore


def _unit(*parts) -> list[float]:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return [b / 255.0 for b in digest]


class HashGenerator:
    """Renders [H, W, 3] images from a hash of (prompt, seed). `fail_when(prompt, seed) -> bool` makes chosen
    requests fail; like the real backends, the GenerationFailed carries the results rendered before it."""

    def __init__(self, steps_per_image: int = 2, fail_when=None, quality=None):
        self.steps_per_image = steps_per_image
        self.fail_when = fail_when
        self.quality = quality             # quality(prompt, seed) -> red level in [0, 1] (StatsScorer alignment)
        self.calls: list[list] = []        # the requests of every generate() call
        self._lock = threading.Lock()

    def render(self, prompt: str, seed: int, width: int, height: int) -> torch.Tensor:
        u = _unit(prompt, seed)
        base = torch.tensor(u[:3]).view(1, 1, 3)
        ys = torch.linspace(0, 1, height).view(height, 1, 1)
        xs = torch.linspace(0, 1, width).view(1, width, 1)
        wave = torch.sin(2 * torch.pi * (ys * (1 + 4 * u[3]) + xs * (1 + 4 * u[4])))
        amplitude = torch.tensor(u[5:8]).view(1, 1, 3) * 0.3
        image = (base * 0.7 + 0.15 + amplitude * wave).clamp(0, 1)
        if self.quality is not None:
            image[..., 0] = float(self.quality(prompt, seed))
        return image

    def generate(self, requests: Sequence, on_step=None, should_stop=None) -> list:
        with self._lock:
            self.calls.append(list(requests))
        total = self.steps_per_image * len(requests)
        for step in range(total):
            if should_stop is not None and should_stop():
                raise Interrupted("generation interrupted")
            if on_step is not None:
                on_step(step + 1, total)
        results = []
        for request in requests:
            if self.fail_when is not None and self.fail_when(request.prompt, request.seed):
                raise GenerationFailed(f"backend error on {request.prompt[:30]!r}", completed=dict(enumerate(results)))
            image = self.render(request.prompt, request.seed, request.width, request.height)
            results.append(GenerationResult(image=image, seed=request.seed, seconds=0.0, prompt=request.prompt))
        return results

    def describe(self) -> dict:
        return {"backend": "hash", "model": "hash-generator"}


class StatsScorer:
    """alignment = 100 * mean red, aesthetic = 1 + 6 * mean green + 3 * min(1, 4 * std): real statistics of the
    pixels, so different prompts and seeds get different, reproducible scores."""

    def __init__(self, fail_all: bool = False):
        self.fail_all = fail_all
        self.calls: list[int] = []

    def score(self, images, text, captions: bool = False) -> list[ImageScore]:
        batch = torch.stack(list(images)) if not isinstance(images, torch.Tensor) else images
        self.calls.append(batch.shape[0])
        if self.fail_all:
            raise ScoringFailed("scorer is broken")
        red = batch[..., 0].mean(dim=(1, 2))
        green = batch[..., 1].mean(dim=(1, 2))
        contrast = batch.std(dim=(1, 2)).mean(dim=-1)   # spatial contrast per channel
        scores = []
        for r, g, c in zip(red.tolist(), green.tolist(), contrast.tolist()):
            caption = f"an image, mostly {'red' if r > g else 'green'}" if captions else None
            scores.append(ImageScore(alignment=100.0 * r, aesthetic=1.0 + 6.0 * g + 3.0 * min(1.0, 4 * c),
                                     caption=caption))
        return scores

    def describe(self) -> dict:
        return {"clip_model": "pixel-stats"}


_WORDS = ("amber", "brass", "cobalt", "dusk", "ember", "fjord", "glacier", "harbour", "indigo", "jade", "kelp",
          "lantern", "mist", "nacre", "ochre", "pewter", "quartz", "rust", "slate", "tide", "umber", "velvet",
          "willow", "xenon", "yarrow", "zinc")


class _Result:
    def __init__(self, value, fallback=False):
        self.value, self.fallback, self.stats = value, fallback, None


class FastOps:
    """The PromptEngine interface, answered from a hash of the inputs. `fail_ops` names operations that raise
    (simulating Ollama going away); `calls` records (operation, arguments) for assertions."""

    def __init__(self, fail_ops: Sequence[str] = (), duplicate_children: bool = False):
        self.fail_ops = set(fail_ops)
        self.duplicate_children = duplicate_children
        self.calls: list[tuple] = []
        self.client = None
        self._lock = threading.Lock()

    def _log(self, op, **kwargs):
        with self._lock:
            self.calls.append((op, kwargs))
        if op in self.fail_ops:
            from pipeline.llm.client import OllamaUnreachable
            raise OllamaUnreachable(f"cannot reach Ollama for {op}")

    def expand(self, prompt, dimension, n, seed=None):
        self._log("expand", prompt=prompt, dimension=dimension, n=n, seed=seed)
        words = ["lighthouse", "harbour", "cliff", "storm", "dawn", "fog", "gulls", "boat", "rocks", "beam"]
        return _Result([f"{dimension} {i}: {prompt}, {words[i % 10]} {words[(i * 3 + 1) % 10]} "
                        f"{hashlib.sha256(f'{prompt}{dimension}{i}{seed}'.encode()).hexdigest()[:6]}"
                        for i in range(n)])

    def critique(self, user_prompt, what, how, prompt, scores, dimension, caption=None, seed=None):
        self._log("critique", prompt=prompt, scores=scores, dimension=dimension, caption=caption, seed=seed)
        return _Result({"critique": f"{dimension} could match '{user_prompt}' better",
                        "recommendation": f"sharpen the {dimension}", "reason": f"total {scores['total']:.1f}"})

    def refine_variants(self, prompt, dimension, critique, user_prompt, n, history=(), seed=None):
        self._log("refine_variants", prompt=prompt, dimension=dimension, critique=critique, n=n,
                  history=list(history), seed=seed)
        if self.duplicate_children:
            return _Result([prompt] * n, fallback=True)
        variants = []
        for j in range(n):
            # keep the parent's first words and add a few new ones, so siblings differ by several tokens
            u = _unit(prompt, seed, j)
            new_words = " ".join(_WORDS[int(x * len(_WORDS)) % len(_WORDS)] for x in u[:5])
            variants.append(f"{' '.join(prompt.split()[:6])} +{dimension}{j} {new_words}")
        return _Result(variants)

    def combine(self, what, how, descriptiveness=2, style="natural", seed=None):
        self._log("combine", what=what, how=how, seed=seed)
        return _Result(f"{what}. Rendered as {how}")

    @staticmethod
    def combine_template(what, how, style="natural"):
        return f"{what}; {how}"

    def negative(self, prompt, seed=None):
        self._log("negative", prompt=prompt, seed=seed)
        return _Result("blurry, low quality")

    def count(self, op: str) -> int:
        return sum(1 for name, _ in self.calls if name == op)


# ---- the collaborators are themselves deterministic and discriminating ----------------------------------------
def test_hash_generator_is_deterministic_and_prompt_sensitive():
    from pipeline.generation.protocol import GenerationRequest
    gen = HashGenerator()
    a = gen.generate([GenerationRequest("a cat", 1, 16, 16)])[0].image
    b = gen.generate([GenerationRequest("a cat", 1, 16, 16)])[0].image
    c = gen.generate([GenerationRequest("a dog", 1, 16, 16)])[0].image
    d = gen.generate([GenerationRequest("a cat", 2, 16, 16)])[0].image
    assert a.shape == (16, 16, 3) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)


def test_stats_scorer_reads_pixels():
    scorer = StatsScorer()
    red = torch.zeros(8, 8, 3)
    red[..., 0] = 1.0
    green = torch.zeros(8, 8, 3)
    green[..., 1] = 1.0
    s_red, s_green = scorer.score([red, green], "x")
    assert s_red.alignment == 100.0 and s_green.alignment == 0.0
    assert s_green.aesthetic == 7.0 and s_red.aesthetic == 1.0
