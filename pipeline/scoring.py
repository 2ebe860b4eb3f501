"""Image scoring: CLIP alignment + LAION aesthetic predictor from one CLIP forward pass."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

DEFAULT_ALPHA = 0.7


@dataclass
class ImageScore:
    alignment: float                   # 100 * max(cos(image, text), 0), 0..100
    aesthetic: float                   # LAION predictor, about 1..10
    caption: Optional[str] = None      # optional VLM caption/critique for the critique step

    def total(self, alpha: float = DEFAULT_ALPHA) -> float:
        return total_score(self.alignment, self.aesthetic, alpha)

    def as_dict(self, alpha: float = DEFAULT_ALPHA) -> dict:
        return {"alignment": self.alignment, "aesthetic": self.aesthetic, "total": self.total(alpha)}


def total_score(alignment: float, aesthetic: float, alpha: float = DEFAULT_ALPHA) -> float:
    """The seed formula: alpha * alignment + (1 - alpha) * 10 * aesthetic (both terms on a 0..100 scale)."""
    return alpha * alignment + (1.0 - alpha) * 10.0 * aesthetic
