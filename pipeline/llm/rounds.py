"""The per-round prompt operations: a whole round's LLM work in as few requests as possible.

    expand_pairs     round 0: N (WHAT, HOW, combined prompt) triples in ONE request
    refine_children  round k: for one parent, its critique and its M children (half + combined prompt) in ONE
                     request; the critique comes first in the answer, so each child is written from it. A vision
                     model may be shown the parent's image and evaluate it first (analysis, strengths,
                     weaknesses); a separate critic's evaluation may be given instead, for the children to fix

With a streaming engine (PromptEngine(stream=True)) each entry is handed to the caller's `on_item(index, entry,
critique)` the moment the part of the answer read so far makes it usable, in answer order, while the rest is still
being written; the result then lists the same entries first.

They give the same record as the single operations (expand, critique, refine_variants, combine): WHAT and HOW stay
separate fields, the critique is kept on each child, and any part the model did not deliver usably is produced by
the same rule-based fallbacks and named in the result's `fallbacks`. A wholly unusable answer is asked again once
with the schema spelled out (PromptEngine._ask), exactly like the single operations.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from . import templates as tpl
from .vision import (EVALUATION_SCHEMA, MAX_SIDE, ImageInput, encoded, evaluation_text,
                     parse_evaluation)
from .text import (OpResult, _count, _critique_dict, _descriptiveness, _dimension, _index, _messages, _scores, _style,
                   _text, clean_text, distinct_key, usable)

MAX_PAIRS = 16
MAX_CHILDREN = 16
NUDGE_HOTTER = 0.3       # a parent asked again after a round of repeats: this much above the usual temperature
MAX_AVOID = 12           # the texts a nudged request lists as already written

PAIRS_SYSTEM = """You write text-to-image prompts in two halves, and the final prompt made from them.
{flux_note}
WHAT half. {what_rules}
HOW half. {how_rules}
PROMPT. {combine_rules}
Rules:
- Keep every element of the user's request and stay on its exact subject.
- WHAT and HOW: each 2 to 4 declarative sentences, 35 to 90 words.
- The {n} entries must be genuinely different: a different reading of the request (details, arrangement, setting)
  and a different look (medium, light, palette or framing) each, not rewordings of one another.
Answer with JSON only, exactly {n} entries: {{"pairs": [{fields}, ...]}}"""

CHILDREN_SYSTEM = """You improve one candidate of an image-prompt search. First review it, then write {n} improved
versions of its {label} half{and_prompt}.
{flux_note}
Scores: alignment (0-100) measures how well the image matches the user's request; aesthetic (0-10) measures its
visual quality. This round edits {dim} and is judged mainly by {score}.
Review ("critique", "recommendation", "reason"), sized by the severity the user message gives:
- minor: it already scores well; ask for one subtle refinement and keep the rest;
- moderate: fix the weakest part clearly;
- significant: ask for a substantial rework of the {dim} half.
Be specific and visual: name the element to add, remove or change; talk only about the {dim} half.
{dim} half. {half_rules}
Each improved {dim} text ("{key}"):
- follows YOUR recommendation; keeps what your critique did not fault and every element of the original request;
- does not repeat an edit that lowered the score; builds on edits that raised it;
- is complete (2 to 4 sentences) and differs clearly from the current text and from the other children.
{prompt_rule}{look_rule}Answer with JSON only: {{{evaluation_fields}"critique": "...", "recommendation": "...",
"reason": "...", "children": [{fields}, ...]}} with exactly {n} children."""

# With a vision model writing the children itself: it looks at the parent's image first, against the user's
# request only, and the children answer what it saw.
LOOK_RULE = """You also see the image rendered from the current prompt. Before the review, look at it and judge it
against the user's request alone, not against the prompt text: "analysis" (what the image actually shows and how far
it meets the request), "strengths" and "weaknesses" (short phrases, the most important first: missing or wrong
subjects, counts, colours, positions or text; malformed hands, faces or anatomy; artefacts; then composition and
light). Your review and every child must fix those weaknesses.
"""
EVALUATION_FIELDS = '"analysis": "...", "strengths": ["..."], "weaknesses": ["..."], '
FIX_WEAKNESSES = "Your review and every improved text must fix these weaknesses."

# When round 0 is split over several requests (so the first pairs render while the others are written), each
# request gets its own direction: the requests cannot see each other, and this keeps their entries apart.
DIRECTIONS = ("the most direct, faithful reading of the request",
              "a different setting or arrangement of the same subject, in a different medium",
              "a closer, more detailed view with bold, directional light",
              "a wider view with strong atmosphere and a distinctive palette",
              "a fitting but less obvious time of day, season or weather",
              "a stylised, illustrative take with a graphic composition")

PROMPT_RULE = ('Each child also has "prompt": its new {dim} text merged with the unchanged {other} half into the one '
               "prompt the image model renders. {combine_rules}\n")


def _combine_rules(descriptiveness: int, style: str) -> str:
    rules = tpl.COMBINE_LENGTH[style][descriptiveness]
    if style == "booru":
        return ("The prompt is for an anime-trained model: short comma-separated lower-case tags and phrases, subject "
                "tags first, then appearance, action and setting, then lighting and style. " + rules)
    return ("The prompt merges WHAT and HOW: main subject first, then the rest of the content, then the look; it "
            "keeps every concrete detail of both and adds no new subjects. " + rules)


def pairs_schema(n: int, combine: bool) -> dict:
    keys = ("what", "how", "prompt") if combine else ("what", "how")
    item = {"type": "object", "properties": {k: {"type": "string"} for k in keys}, "required": list(keys)}
    return {"type": "object", "properties": {"pairs": {"type": "array", "items": item, "minItems": n,
                                                       "maxItems": n}},
            "required": ["pairs"]}


def children_schema(dimension: str, n: int, combine: bool, evaluate: bool = False) -> dict:
    """evaluate: the answer opens with the model's own evaluation of the image it was shown."""
    keys = (dimension, "prompt") if combine else (dimension,)
    item = {"type": "object", "properties": {k: {"type": "string"} for k in keys}, "required": list(keys)}
    properties = dict(EVALUATION_SCHEMA["properties"]) if evaluate else {}
    properties.update({key: {"type": "string"} for key in ("critique", "recommendation", "reason")})
    properties["children"] = {"type": "array", "items": item, "minItems": n, "maxItems": n}
    return {"type": "object", "properties": properties, "required": list(properties)}


def _fields(keys: Iterable[str]) -> str:
    return "{" + ", ".join(f'"{k}": "..."' for k in keys) + "}"


class RoundOperations:
    """Mixed into PromptEngine: uses its `_ask`, `_tap`, `_refuse_fallback` and `combine_template`."""

    def expand_pairs(self, prompt: str, n: int, descriptiveness: int = 2, style: str = "natural",
                     combine: bool = True, seed: Optional[int] = None, part: Optional[tuple] = None,
                     on_item: Optional[Callable[[int, dict, None], None]] = None) -> OpResult[list]:
        """n distinct {what, how, prompt, fallbacks} entries for the user's prompt, in one call. combine=False
        leaves "prompt" empty (the caller combines by template). part=(i, k): this call writes the i-th of k
        groups of a round's pairs; it takes DIRECTIONS[i] and its fallbacks start past the earlier groups'.
        on_item(index, entry, None): each entry as soon as it is complete (streaming engines)."""
        prompt, n = _text("prompt", prompt), _count("n", n, MAX_PAIRS)
        descriptiveness, style = _descriptiveness(descriptiveness), _style(style)
        keys = ("what", "how", "prompt") if combine else ("what", "how")
        system = PAIRS_SYSTEM.format(flux_note=tpl.FLUX_NOTE, what_rules=tpl.HALF_RULES["what"],
                                     how_rules=tpl.HALF_RULES["how"],
                                     combine_rules=_combine_rules(descriptiveness, style) if combine else
                                     "Not needed: leave it out.", n=n, fields=_fields(keys))
        user = f"User request: {tpl._quote(prompt)}\n\nWrite {n} distinct entries."
        group, first = 0, 0
        if part is not None and part[1] > 1:
            group, first = int(part[0]), int(part[0]) * n
            user += f" Take this direction: {DIRECTIONS[group % len(DIRECTIONS)]}."

        def parse(data: Any) -> list:
            items = data.get("pairs") if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise ValueError("'pairs' was not a list of objects")
            out, seen = [], set()
            for item in items:
                try:
                    what, how = usable(_field(item, "what")), usable(_field(item, "how"))
                except ValueError:
                    continue
                key = (distinct_key(what), distinct_key(how))
                if key in seen:
                    continue
                seen.add(key)
                out.append({"what": what, "how": how, "prompt": _prompt_or_none(item) if combine else None})
            if not out:
                raise ValueError("no usable (what, how) entry in 'pairs'")
            return out

        def finish(entry: dict) -> dict:
            """The entry as the result lists it: a missing combined prompt made by the template, and said so."""
            entry = {**entry, "fallbacks": list(entry.get("fallbacks") or [])}
            if combine and not entry["prompt"]:
                entry["prompt"] = self.combine_template(entry["what"], entry["how"], style)
                entry["fallbacks"].append("combine")
            entry["prompt"] = entry["prompt"] or ""
            return entry

        tap = self._tap("pairs", parse, lambda found: found[:n],
                        on_item and (lambda found, index: on_item(index, finish(found[index]), None)))
        found, stats, problem = self._ask("expand", _messages(system, user), pairs_schema(n, combine), parse, seed,
                                          num_predict=200 + (420 if combine else 260) * n, tap=tap)
        found = (found or [])[:n]
        missing = n - len(found)
        if missing:
            problem = problem or f"the model gave {len(found)} distinct entries of {n}"
            self._refuse_fallback("expand", problem)
            whats = _fresh(tpl.fallback_variants(prompt, "what", first + n + 40)[first:], [e["what"] for e in found])
            hows = _fresh(tpl.fallback_variants(prompt, "how", first + n + 40)[first:], [e["how"] for e in found])
            for i in range(missing):
                found.append({"what": whats[i], "how": hows[i], "prompt": None,
                              "fallbacks": ["expand_what", "expand_how"]})
        found = [finish(entry) for entry in found]
        fallbacks = sum(1 for e in found if e["fallbacks"])
        return OpResult(found, fallback=fallbacks > 0, stats=stats, fallback_count=fallbacks, problem=problem)

    def refine_children(self, user_prompt: str, what: str, how: str, prompt: str, scores: Mapping, dimension: str,
                        n: int, history: Iterable[Mapping] = (), caption: Optional[str] = None,
                        descriptiveness: int = 2, style: str = "natural", combine: bool = True,
                        seed: Optional[int] = None, on_item: Optional[Callable[[int, dict, dict], None]] = None,
                        avoid: Sequence[str] = (), image: Optional[ImageInput] = None,
                        evaluation: Optional[Mapping] = None, max_side: int = MAX_SIDE) -> OpResult[dict]:
        """One parent's critique and n children, in one call ->
        {critique: {critique, recommendation, reason}, children: [{what, how, prompt, fallbacks}],
         evaluation: {analysis, strengths, weaknesses} | None, evaluation_problem: str}.
        on_item(index, child, critique): each child as soon as it is complete (streaming engines).
        avoid: texts of this half already written in the search (the model repeated itself): the children must
        differ from them, and the request is made NUDGE_HOTTER warmer.
        image: the parent's rendered image, for a vision model that looks at it and evaluates it before writing
        (the answer's `evaluation`). evaluation: what a separate vision critic saw, for the children to fix."""
        user_prompt, dimension = _text("user_prompt", user_prompt), _dimension(dimension)
        what, how, prompt = _text("what", what), _text("how", how), str(prompt or "")
        n, scores, history = _count("n", n, MAX_CHILDREN), _scores(scores, dimension), list(history)
        descriptiveness, style = _descriptiveness(descriptiveness), _style(style)
        other = "how" if dimension == "what" else "what"
        current = what if dimension == "what" else how
        keys = (dimension, "prompt") if combine else (dimension,)
        dim = dimension.upper()
        system = CHILDREN_SYSTEM.format(
            n=n, label=tpl.LABELS[dimension], and_prompt=" (each with its combined prompt)" if combine else "",
            flux_note=tpl.FLUX_NOTE, dim=dim, score="alignment" if dimension == "what" else "aesthetic",
            half_rules=tpl.HALF_RULES[dimension], key=dimension, fields=_fields(keys),
            prompt_rule=PROMPT_RULE.format(dim=dim, other=other.upper(),
                                           combine_rules=_combine_rules(descriptiveness, style)) if combine else "",
            look_rule=LOOK_RULE if image is not None else "",
            evaluation_fields=EVALUATION_FIELDS if image is not None else "")
        level, why = tpl.severity(dimension, scores)
        lines = [tpl.critique_user(user_prompt, what, how, prompt, scores, dimension, level, why, caption)]
        past = tpl.describe_history(history)
        if past:
            lines += ["Earlier edits in this line (oldest first):"] + past
        if evaluation:
            lines += [evaluation_text(evaluation), FIX_WEAKNESSES]
        avoid = list(dict.fromkeys(t for t in avoid if t))[-MAX_AVOID:]
        if avoid:
            lines += [f"These {dim} texts were already written in this search; every new one must differ clearly "
                      f"from all of them (other elements, another arrangement, other wording):"]
            lines += [f"- {text}" for text in avoid]
        lines.append(f"{'Look at the image, review it' if image is not None else 'Review it'}, then write {n} "
                     f"different improved {dim} texts.")
        messages = _messages(system, "\n".join(lines))
        if image is not None:
            messages[-1]["images"] = [encoded(image, max_side)]
        # Texts to avoid are shown, not filtered here: a child that repeats one anyway is dropped as a duplicate
        # by the search, which then knows the model had nothing new (a rule-based child would hide that).
        banned = {distinct_key(current)}

        def parse(data: Any) -> dict:
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            looked = {"evaluation": None, "evaluation_problem": ""}
            if image is not None:     # an unusable evaluation does not sink usable children
                try:
                    looked["evaluation"] = parse_evaluation(data)
                except ValueError as exc:
                    looked["evaluation_problem"] = str(exc)
            review = {key: clean_text(str(data.get(key) or "")) for key in ("critique", "recommendation", "reason")}
            for key in ("critique", "recommendation"):
                if not review[key]:
                    raise ValueError(f"'{key}' was missing or empty")
            children, seen = [], set(banned)
            for item in data.get("children") if isinstance(data.get("children"), list) else []:
                try:
                    half = usable(_field(item, dimension))
                except ValueError:
                    continue
                if distinct_key(half) in seen:
                    continue
                seen.add(distinct_key(half))
                children.append({"half": half, "prompt": _prompt_or_none(item) if combine else None})
            return {"critique": review, "children": children, **looked}

        def unseen(found: Mapping) -> list:
            """A child written without the evaluation the model was asked for (the look at the image failed)."""
            return ["critic"] if image is not None and not found.get("evaluation") else []

        def finish(child: dict, shared: Sequence[str] = ()) -> dict:
            """The child as the result lists it: both halves, its combined prompt (by template when missing)."""
            halves = {"what": what, "how": how, dimension: child["half"]}
            fallbacks = list(shared) + (["refine"] if child.get("refine_fallback") else [])
            combined = child["prompt"]
            if combine and not combined:
                combined = self.combine_template(halves["what"], halves["how"], style)
                fallbacks.append("combine")
            return {**halves, "prompt": combined or "", "fallbacks": fallbacks}

        tap = self._tap("children", parse, lambda found: found["children"][:n],
                        on_item and (lambda found, index: on_item(index, finish(found["children"][index],
                                                                                 unseen(found)),
                                                                  _critique_dict(found["critique"]))),
                        needs=("critique", "recommendation", "reason"))
        schema = children_schema(dimension, n, combine, evaluate=image is not None)
        num_predict = (600 if image is not None else 300) + (420 if combine else 220) * n
        answer, stats, problem = self._ask("refine", messages, schema, parse, seed, num_predict=num_predict, tap=tap,
                                           hotter=NUDGE_HOTTER if avoid else 0.0)
        shared: list[str] = []
        if answer is None:
            self._refuse_fallback("refine", problem)
            answer = {"critique": tpl.fallback_critique(user_prompt, what, how, scores, dimension, caption),
                      "children": [], "evaluation": None, "evaluation_problem": problem if image is not None else ""}
            shared.append("critique")
        children = answer["children"][:n]
        missing = n - len(children)
        if missing:
            problem = problem or f"the model gave {len(children)} distinct children of {n}"
            self._refuse_fallback("refine", problem)
            made = _fresh(tpl.fallback_refinements(current, dimension, user_prompt, _index(seed)),
                          [current] + [c["half"] for c in children])
            children += [{"half": half, "prompt": None, "refine_fallback": True} for half in made[:missing]]
        out = [finish(child, shared + unseen(answer)) for child in children]
        fallbacks = sum(1 for c in out if c["fallbacks"])
        return OpResult({"critique": _critique_dict(answer["critique"]), "children": out,
                         "evaluation": answer.get("evaluation"),
                         "evaluation_problem": answer.get("evaluation_problem") or ""},
                        fallback=fallbacks > 0, stats=stats, fallback_count=fallbacks, problem=problem)


def _field(item: Any, key: str) -> str:
    if not isinstance(item, dict) or not isinstance(item.get(key), str):
        raise ValueError(f"an entry had no '{key}' text")
    return item[key]


def _prompt_or_none(item: Any) -> Optional[str]:
    try:
        return usable(_field(item, "prompt"))
    except ValueError:
        return None


def _fresh(candidates: Iterable[str], taken: Iterable[str]) -> list[str]:
    """The candidates not already (as distinct texts) among `taken`, in order."""
    seen = {distinct_key(t) for t in taken}
    out = []
    for text in candidates:
        if distinct_key(text) not in seen:
            seen.add(distinct_key(text))
            out.append(text)
    return out
