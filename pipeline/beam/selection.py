"""Pure decisions of the beam search: seeds, ranking, elitist selection, duplicate detection, which half to refine,
and lineage. No model is called here, so every rule is easy to test on its own."""
from __future__ import annotations

import hashlib
import re
from statistics import fmean
from typing import Iterable, Mapping, Optional, Sequence

from .types import Candidate

SEED_SPACE = 2**32
DUPLICATE_JACCARD = 0.9


# ---- seeds ---------------------------------------------------------------------------------------------------------
def derive_seed(run_seed: int, *parts) -> int:
    """A stable seed in [0, 2**32) from the run seed and a path such as ("image", iteration, index).

    A hash (not random.Random) so the value depends only on its inputs, on every platform and Python version.
    """
    key = "/".join([str(int(run_seed))] + [str(part) for part in parts]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % SEED_SPACE


# ---- ranking and selection -----------------------------------------------------------------------------------------
def rank_key(candidate: Candidate) -> tuple:
    """Sort key: total desc, then alignment desc, then earlier round and lower index first (deterministic ties)."""
    scores = candidate.scores or {}
    return (-float(scores.get("total", float("-inf"))), -float(scores.get("alignment", float("-inf"))),
            candidate.iteration, candidate.index)


def rank(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Scored candidates, best first. Failed candidates never rank."""
    return sorted((c for c in candidates if c.ok and c.scores is not None), key=rank_key)


def select_survivors(parents: Sequence[Candidate], children: Sequence[Candidate], keep_top: int) -> list[Candidate]:
    """Elitism: parents compete with their children; the best keep_top of the union survive."""
    pool = {c.id: c for c in list(parents) + list(children)}
    return rank(pool.values())[:keep_top]


# ---- near-duplicate prompts ----------------------------------------------------------------------------------------
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def normalise_prompt(text: str) -> str:
    """Lower case, punctuation and runs of white space folded to single spaces."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def token_jaccard(a: str, b: str) -> float:
    return _jaccard(frozenset(normalise_prompt(a).split()), frozenset(normalise_prompt(b).split()))


def _jaccard(tokens_a: frozenset, tokens_b: frozenset) -> float:
    union = tokens_a | tokens_b
    return len(tokens_a & tokens_b) / len(union) if union else 1.0


class DuplicateIndex:
    """Prompts already in the run. A new prompt is a duplicate of an earlier one when their normalised texts are
    equal or their token sets overlap by Jaccard >= 0.9 (re-rendering it would spend an image on no new idea)."""

    def __init__(self, threshold: float = DUPLICATE_JACCARD):
        self.threshold = threshold
        self._entries: list[tuple[str, str, frozenset]] = []   # (id, normalised text, tokens)
        self._exact: dict[str, str] = {}

    def add(self, key: str, text: str) -> None:
        normal = normalise_prompt(text)
        self._exact.setdefault(normal, key)
        self._entries.append((key, normal, frozenset(normal.split())))

    def find(self, text: str) -> Optional[str]:
        """The key of the first recorded near-duplicate of `text`, or None."""
        normal = normalise_prompt(text)
        if normal in self._exact:
            return self._exact[normal]
        tokens = frozenset(normal.split())
        if not tokens:
            return None
        for key, _, other in self._entries:
            if _jaccard(tokens, other) >= self.threshold:
                return key
        return None


# ---- which half to refine ------------------------------------------------------------------------------------------
def alternate_dimension(iteration: int) -> str:
    """WHAT on odd rounds, HOW on even rounds (round 0 expands both)."""
    return "what" if iteration % 2 == 1 else "how"


def adaptive_dimension(parent: Candidate, pool: Sequence[Candidate], iteration: int) -> str:
    """Refine the parent's weaker half.

    Both scores are put on a 0..1 scale (alignment / 100, aesthetic / 10) and taken relative to the mean of the
    pool the parent was selected from (the last round's scored candidates, parents included). The half whose
    relative score is lower is weak: alignment -> WHAT (the content misses the request), aesthetic -> HOW (the
    rendering is poor). An exact tie falls back to the alternate rule for this round.
    """
    scored = [c for c in pool if c.ok and c.scores is not None] or [parent]
    mean_alignment = fmean(c.scores["alignment"] / 100.0 for c in scored)
    mean_aesthetic = fmean(c.scores["aesthetic"] / 10.0 for c in scored)
    relative_alignment = parent.scores["alignment"] / 100.0 - mean_alignment
    relative_aesthetic = parent.scores["aesthetic"] / 10.0 - mean_aesthetic
    if relative_alignment < relative_aesthetic:
        return "what"
    if relative_aesthetic < relative_alignment:
        return "how"
    return alternate_dimension(iteration)


def choose_dimension(policy: str, parent: Candidate, pool: Sequence[Candidate], iteration: int) -> str:
    if policy == "adaptive":
        return adaptive_dimension(parent, pool, iteration)
    return alternate_dimension(iteration)


# ---- lineage -------------------------------------------------------------------------------------------------------
def lineage(candidates: Mapping[str, Candidate], candidate_id: str) -> list[str]:
    """Ids from round 0 to `candidate_id`, following parent links (a parent may be any number of rounds back:
    survivors keep their id). Raises ValueError on a broken or cyclic chain."""
    chain, seen = [], set()
    current: Optional[str] = candidate_id
    while current is not None:
        if current in seen:
            raise ValueError(f"lineage of {candidate_id} has a cycle at {current}")
        if current not in candidates:
            raise ValueError(f"lineage of {candidate_id} refers to unknown candidate {current}")
        seen.add(current)
        chain.append(current)
        current = candidates[current].parent
    chain.reverse()
    return chain


def edit_history(candidates: Mapping[str, Candidate], candidate_id: str) -> list[dict]:
    """The refinements that led to a candidate, oldest first, as PromptEngine `history` items:
    {"dimension", "before", "after", "score_before", "score_after"}."""
    chain = lineage(candidates, candidate_id)
    history = []
    for parent_id, child_id in zip(chain, chain[1:]):
        parent, child = candidates[parent_id], candidates[child_id]
        dimension = child.dimension or "what"
        history.append({
            "dimension": dimension,
            "before": getattr(parent, dimension),
            "after": getattr(child, dimension),
            "score_before": parent.total,
            "score_after": child.total,
        })
    return history
