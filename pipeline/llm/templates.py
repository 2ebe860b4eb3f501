"""System prompts, user messages, output schemas and rule-based fallbacks of the prompt operations.

The prompts are written for FLUX: its T5 encoder reads ordinary sentences (up to 512 tokens), so the halves are
plain descriptive English rather than tag soup. WHAT is only what is physically in the picture; HOW is how it
looks. Every operation asks for JSON and sends the matching schema as Ollama's `format`, so a grammar constrains
the reply; the text of the schema is also in the system prompt because small models follow it better when told.
"""
from __future__ import annotations

import itertools
import json
import numbers
import re
from typing import Any, Iterable, Mapping, Optional, Sequence

DIMENSIONS = ("what", "how")
STYLES = ("natural", "booru")
LABELS = {"what": "WHAT (content)", "how": "HOW (style)"}

# -- output schemas (sent as Ollama `format`) ----------------------------------------------------------------------

PROMPT_SCHEMA = {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}
CRITIQUE_SCHEMA = {"type": "object",
                   "properties": {"critique": {"type": "string"}, "recommendation": {"type": "string"},
                                  "reason": {"type": "string"}},
                   "required": ["critique", "recommendation", "reason"]}
NEGATIVE_SCHEMA = {"type": "object",
                   "properties": {"terms": {"type": "array", "items": {"type": "string"},
                                            "minItems": 5, "maxItems": 25}},
                   "required": ["terms"]}


def variants_schema(n: int) -> dict:
    return {"type": "object",
            "properties": {"variants": {"type": "array", "items": {"type": "string"}, "minItems": n, "maxItems": n}},
            "required": ["variants"]}


# -- system prompts ------------------------------------------------------------------------------------------------

FLUX_NOTE = ("The text is read by FLUX, an image model whose T5 encoder understands ordinary English. Write plain, "
             "concrete, grammatical sentences: no tag lists, no keyword spam such as '8k, masterpiece, trending', no "
             "negations (writing 'no people' puts people in the picture), no instructions to the model.")

HALF_RULES = {
    "what": ("WHAT describes only what is physically in the picture:\n"
             "- subjects: kind, number, appearance, age, clothing, pose, expression, action;\n"
             "- objects: shape, colour, material, texture, size relative to each other;\n"
             "- setting and layout: what is in the foreground and background, what is left and right; time of day "
             "or weather only as visible facts.\n"
             "Never mention lighting, camera, lens, framing, art style, medium, colour grading, mood or quality: "
             "those belong to the HOW half."),
    "how": ("HOW describes only how the picture looks:\n"
            "- lighting: direction, quality, colour temperature, shadows;\n"
            "- composition: shot distance, camera angle, framing, depth of field;\n"
            "- palette: name specific hues;\n"
            "- medium and rendering: photograph, oil painting, watercolour, 3D render, ink drawing, film still;\n"
            "- atmosphere shown through visible effects: haze, glow, rain streaks, dust in the light.\n"
            "Choose a look that suits the user's subject and mood. Never add or describe subjects or objects: "
            "those belong to the WHAT half."),
}

EXPAND_SYSTEM = """You write the {label} half of a text-to-image prompt.
{flux_note}
{half_rules}
Rules:
- Keep every element of the user's request and stay on its exact subject.
- Each variant: 2 to 4 declarative sentences, 35 to 90 words.
- The variants must be genuinely different{difference}, not rewordings of one another.
Answer with JSON only, exactly {n} strings: {{"variants": ["...", "..."]}}"""

EXPAND_DIFFERENCE = {"what": " readings of the request (different concrete details, arrangement or setting)",
                     "how": " looks (a different medium, light, palette or framing each)"}

REFINE_SYSTEM = """You improve the {label} half of a text-to-image prompt that a search is optimising.
{flux_note}
{half_rules}
You receive the user's original request, the current {dim} text, a critique of the image it produced (with a
recommendation and its reason) and the earlier edits in this line with how the score moved.
- Apply the recommendation; keep what the critique did not fault.
- Keep every element of the original request; never drift to another subject.
- Do not repeat an edit that lowered the score; build on edits that raised it.
- Write the complete new text (2 to 4 sentences), not a list of changes.
{answer}"""

REFINE_ANSWER_ONE = 'Answer with JSON only: {"prompt": "..."}'
REFINE_ANSWER_MANY = ("Write {n} alternative improved texts. Each tries a different way to address the critique (for "
                      "example: add a missing element, make a vague detail concrete, rearrange the scene, simplify a "
                      "cluttered description) and differs clearly from the others and from the current text.\n"
                      'Answer with JSON only, exactly {n} strings: {{"variants": ["...", "..."]}}')

COMBINE_NATURAL = """You merge the two halves of a text-to-image prompt into the one prompt FLUX will render.
{flux_note}
WHAT says what is in the picture; HOW says how it looks (light, composition, palette, medium, atmosphere).
- Start with the main subject, then the rest of the content, then the look.
- Keep every concrete detail of both halves; add no new subjects or objects.
- If the halves disagree, WHAT decides the content and HOW decides the look.
- {length}
Answer with JSON only: {{"prompt": "..."}}"""

COMBINE_BOORU = """You merge the two halves of a text-to-image prompt into one prompt for an anime-trained image model.
Write a hybrid of short comma-separated tags and short phrases, in lower case: first the subject count and
subject tags (for example 1girl, solo), then appearance, clothing, action and setting, then lighting, composition
and style tags. Keep every concrete detail of both halves; add no new subjects.
- {length}
Answer with JSON only: {{"prompt": "..."}}"""

COMBINE_LENGTH = {
    "natural": {1: "Be brief: one or two sentences, at most 50 words; keep only the most important details.",
                2: "Balanced: 3 to 5 sentences, 60 to 120 words.",
                3: "Descriptive: 5 to 8 sentences, 120 to 200 words, covering every detail."},
    "booru": {1: "Concise: 15 to 25 tags.", 2: "Balanced: 25 to 40 tags and phrases.",
              3: "Descriptive: 40 to 60 tags and phrases."},
}

CRITIQUE_SYSTEM = """You review one candidate of an image-prompt search and tell the next editor how to change its
{label} half. WHAT is what is physically in the picture; HOW is light, composition, palette, medium and atmosphere.
Scores: alignment (0-100) measures how well the image matches the user's request; aesthetic (0-10) measures its
visual quality. This round edits {dim} and is judged mainly by {score}.
The user message gives the severity:
- minor: it already scores well; ask for one subtle refinement and keep the rest;
- moderate: fix the weakest part clearly;
- significant: ask for a substantial rework of the {dim} half.
Be specific and visual: name the element to add, remove or change. Talk only about the {dim} half.
Answer with JSON only: {{"critique": "what is wrong or missing, in one or two sentences", "recommendation": "one
concrete edit, as an instruction", "reason": "why that edit should raise the score"}}"""

NEGATIVE_SYSTEM = """You write the negative prompt for an image: things that must NOT appear.
List 10 to 20 short terms:
- rendering defects: blurry, jpeg artifacts, deformed hands, extra fingers, distorted face, watermark, text;
- disambiguation: for 'a 30 year old woman' list 'elderly, child'; for 'a red car' list 'blue car';
- styles or settings that would contradict the prompt.
Never list anything the prompt asks for. Write each term as the unwanted thing itself ('text', never 'no text').
Answer with JSON only: {"terms": ["...", "..."]}"""


def expand_system(dimension: str, n: int) -> str:
    return EXPAND_SYSTEM.format(label=LABELS[dimension], flux_note=FLUX_NOTE, half_rules=HALF_RULES[dimension],
                                difference=EXPAND_DIFFERENCE[dimension], n=n)


def refine_system(dimension: str, n: Optional[int] = None) -> str:
    answer = REFINE_ANSWER_ONE if n is None else REFINE_ANSWER_MANY.format(n=n)
    return REFINE_SYSTEM.format(label=LABELS[dimension], flux_note=FLUX_NOTE, half_rules=HALF_RULES[dimension],
                                dim=dimension.upper(), answer=answer)


def combine_system(descriptiveness: int, style: str) -> str:
    length = COMBINE_LENGTH[style][descriptiveness]
    if style == "booru":
        return COMBINE_BOORU.format(length=length)
    return COMBINE_NATURAL.format(flux_note=FLUX_NOTE, length=length)


def critique_system(dimension: str) -> str:
    score = "alignment" if dimension == "what" else "aesthetic"
    return CRITIQUE_SYSTEM.format(label=LABELS[dimension], dim=dimension.upper(), score=score)


# -- user messages -------------------------------------------------------------------------------------------------

def _quote(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return json.dumps(text if len(text) <= limit else text[:limit] + "…", ensure_ascii=False)


def expand_user(prompt: str, dimension: str, n: int, existing: Sequence[str] = ()) -> str:
    lines = [f"User request: {_quote(prompt)}", ""]
    if existing:
        lines.append(f"These {LABELS[dimension]} variants already exist:")
        lines += [f"- {_quote(text, 300)}" for text in existing]
        lines.append(f"Write {n} NEW {LABELS[dimension]} variants that differ clearly from all of them.")
    else:
        lines.append(f"Write {n} distinct {LABELS[dimension]} variants.")
    return "\n".join(lines)


def describe_history(history: Iterable[Mapping]) -> list[str]:
    """Earlier edits of this lineage, newest last, as lines the model can learn from (at most six)."""
    lines = []
    for item in list(history)[-6:]:
        before, after = item.get("score_before"), item.get("score_after")
        if isinstance(before, numbers.Real) and isinstance(after, numbers.Real):
            verdict = "better" if after > before else "worse" if after < before else "no change"
            outcome = f"score {before:.1f} -> {after:.1f} ({verdict})"
        else:
            outcome = "score not measured"
        dim = str(item.get("dimension") or "?").upper()
        lines.append(f"- {dim}: {_quote(item.get('before', ''), 240)} -> {_quote(item.get('after', ''), 240)}: "
                     f"{outcome}")
    return lines


def refine_user(prompt: str, dimension: str, critique: Mapping, user_prompt: str, history: Iterable[Mapping],
                n: Optional[int] = None) -> str:
    dim = dimension.upper()
    lines = [f"Original user request: {_quote(user_prompt)}", f"Current {dim} text: {_quote(prompt)}",
             f"Critique: {critique.get('critique') or 'none given'}",
             f"Recommendation: {critique.get('recommendation') or 'improve it'}",
             f"Reason: {critique.get('reason') or 'none given'}"]
    past = describe_history(history)
    if past:
        lines += ["Earlier edits in this line (oldest first):"] + past
    lines.append(f"Write the improved {dim} text." if n is None else f"Write {n} different improved {dim} texts.")
    return "\n".join(lines)


def combine_user(what: str, how: str) -> str:
    return f"WHAT: {_quote(what, 1500)}\nHOW: {_quote(how, 1500)}\n\nWrite the combined prompt."


def critique_user(user_prompt: str, what: str, how: str, prompt: str, scores: Mapping, dimension: str,
                  severity: str, severity_reason: str, caption: Optional[str]) -> str:
    parts = []
    if isinstance(scores.get("alignment"), numbers.Real):
        parts.append(f"alignment {scores['alignment']:.1f}/100")
    if isinstance(scores.get("aesthetic"), numbers.Real):
        parts.append(f"aesthetic {scores['aesthetic']:.2f}/10")
    if isinstance(scores.get("total"), numbers.Real):
        parts.append(f"total {scores['total']:.1f}")
    lines = [f"User request: {_quote(user_prompt)}", f"WHAT: {_quote(what)}", f"HOW: {_quote(how)}",
             f"Combined prompt: {_quote(prompt, 1500)}", "Scores: " + (", ".join(parts) or "not available")]
    if caption:
        lines.append(f"Caption of the rendered image: {_quote(caption)}")
    lines += [f"Half to edit: {LABELS[dimension]}", f"Severity: {severity} ({severity_reason})"]
    return "\n".join(lines)


def negative_user(prompt: str) -> str:
    return f"Prompt: {_quote(prompt, 1500)}\n\nWrite the negative terms."


def retry_user(problem: str, schema: Mapping) -> str:
    return (f"That answer could not be used: {problem}. Answer again with only a JSON object that matches this "
            f"schema, nothing else: {json.dumps(schema)}")


# Severity bands of the critique: (minor above, significant below) on each dimension's own score.
# Calibrated to the scores the scorer really gives, not to their nominal ranges: CLIPScore (100*cos, ViT-L/14)
# of a well-matched image sits around 28-35 and rarely passes 40; the LAION predictor gives most images 4.5-6.5
# and 6.5+ to the best photographs. Bands of 80/60 and 8/6 (the reference system's) would call every image
# "significant" and push the LLM into rewrites where a touch-up is due.
SEVERITY_BANDS = {"what": ("alignment", 32.0, 26.0, "/100"), "how": ("aesthetic", 6.5, 5.5, "/10")}


def severity(dimension: str, scores: Mapping[str, Any]) -> tuple[str, str]:
    """How big a change the critique should ask for, from the score that matters for this dimension."""
    name, minor_above, significant_below, scale = SEVERITY_BANDS[dimension]
    value = float(scores[name])
    if value > minor_above:
        return "minor", f"{name} {value:g}{scale} is above {minor_above:g}"
    if value >= significant_below:
        return "moderate", f"{name} {value:g}{scale} is between {significant_below:g} and {minor_above:g}"
    return "significant", f"{name} {value:g}{scale} is below {significant_below:g}"


# -- rule-based fallbacks (used only when the model's output stays unusable) -----------------------------------------

WHAT_FALLBACKS = (
    "{p}.",
    "{p}. The main subject is fully visible, its shape, colours and surface textures clearly defined.",
    "{p}, placed in a fitting and detailed surrounding that matches the subject.",
    "{p}. A few smaller objects related to the subject sit around it.",
    "{p}, with every element of the scene shown as a concrete physical detail.",
    "{p}. Behind it lies a simple, uncluttered setting that suits the subject.",
    "{p}, seen as a whole, with the subject's materials and small details easy to make out.",
    "{p}. The subject is shown in the middle of a typical moment for it.",
)
HOW_FALLBACKS = (
    "Soft natural daylight from the side, gentle shadows, balanced composition, true-to-life colours and sharp "
    "photographic detail.",
    "Warm golden-hour light, low camera angle, shallow depth of field, rich amber and teal tones, cinematic "
    "photograph.",
    "Even studio lighting, centred composition against a clean backdrop, muted neutral palette, crisp fine detail.",
    "Dramatic low-key lighting with a strong rim light, deep shadows, wide framing and saturated contrasting colours.",
    "Diffuse overcast light, wide establishing shot, cool blues and greys, light atmospheric haze, documentary style.",
    "Oil painting on canvas with visible brushstrokes, warm earthy palette, soft window light, classical composition.",
    "Clean digital illustration with bold outlines, flat vivid colours, bright even lighting and a diagonal layout.",
    "Night scene lit by neon signs and streetlights, reflections on wet surfaces, magenta and cyan palette.",
)
WHAT_DETAILS = ("Every part of the subject is clearly visible.", "The subject's materials and textures are distinct.",
                "The setting around the subject is concrete and easy to read.",
                "The subject's pose and expression are clearly shown.")
HOW_DETAILS = ("Lighting is clean and directional, with soft shadows.", "The composition leaves breathing room "
               "around the subject.", "Colours are harmonious and rich without oversaturation.",
               "Fine detail is sharp where the eye lands first.")
DETAILS = {"what": WHAT_DETAILS, "how": HOW_DETAILS}
FALLBACK_NEGATIVE = ("blurry", "low quality", "distorted", "deformed", "artifacts", "jpeg artifacts", "watermark",
                     "text", "signature", "bad anatomy", "extra fingers", "oversaturated")


def fallback_variants(prompt: str, dimension: str, n: int) -> list[str]:
    """n distinct rule-based variants (up to 40); past the templates, a detail sentence keeps them distinct."""
    templates = WHAT_FALLBACKS if dimension == "what" else HOW_FALLBACKS
    details = DETAILS[dimension]
    subject = prompt.strip().rstrip(".")
    subject = subject[:1].upper() + subject[1:]
    out = []
    for k in range(n):
        text = templates[k % len(templates)].format(p=subject)
        if k >= len(templates):
            text = f"{text} {details[(k // len(templates) - 1) % len(details)]}"
        out.append(text)
    return out


def fallback_refinement(prompt: str, dimension: str, user_prompt: str, index: int = 0) -> str:
    """A rule-based edit that always changes the text: restore missing request words (WHAT), else add a detail."""
    text = prompt.strip()
    if dimension == "what" and not set(content_words(user_prompt)) <= set(content_words(text)):
        return f"{text.rstrip('.')}. The picture shows {user_prompt.strip().rstrip('.')}."
    details = DETAILS[dimension]
    for k in range(len(details)):
        detail = details[(index + k) % len(details)]
        if detail.lower() not in text.lower():
            return f"{text.rstrip('.')}. {detail}" if text else detail
    return f"{text.rstrip('.')}. {details[index % len(details)]}"


def fallback_refinements(prompt: str, dimension: str, user_prompt: str, index: int = 0) -> list[str]:
    """Distinct rule-based edits: the one of `fallback_refinement`, then the current text plus every subset (and
    reversed order) of the detail sentences."""
    details, base = DETAILS[dimension], prompt.rstrip(".")
    out = [fallback_refinement(prompt, dimension, user_prompt, index)]
    for size in range(1, len(details) + 1):
        for combo in itertools.combinations(details, size):
            out.append(f"{base}. {' '.join(combo)}")
            if size > 1:
                out.append(f"{base}. {' '.join(reversed(combo))}")
    return out


_STOPWORDS = frozenset("a an the of and or in on at to with for from by is are be it its this that as into onto "
                       "over under near very some".split())


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9']+", (text or "").lower()) if w not in _STOPWORDS]


def fallback_critique(user_prompt: str, what: str, how: str, scores: Mapping, dimension: str,
                       caption: Optional[str]) -> dict:
    """The critique when the model's stays unusable: sized by the score, naming request words the image lacks."""
    level, why = severity(dimension, scores)
    seen_text = caption if caption else what
    seen_words = set(content_words(seen_text))
    missing = [w for w in dict.fromkeys(content_words(user_prompt)) if w not in seen_words]
    if dimension == "what":
        problem = {"minor": "The content already matches the request well.",
                   "moderate": "The image only partly matches the request.",
                   "significant": "The image does not clearly show what was requested."}[level]
        if missing:
            where = "the image caption" if caption else "the WHAT text"
            problem += f" {', '.join(missing[:5])} {'is' if len(missing) == 1 else 'are'} missing from {where}."
            advice = f"Name {', '.join(missing[:5])} explicitly, early in the WHAT text, as visible physical details."
        else:
            advice = {"minor": "Keep the content and make one detail of the main subject more concrete.",
                      "moderate": "Put the main subject of the request first and describe it with concrete "
                                  "physical details.",
                      "significant": "Rewrite the WHAT text around the exact subject of the request, naming each "
                                     "requested element plainly."}[level]
    else:
        problem = {"minor": "The look is already strong.",
                   "moderate": "The look is acceptable but unremarkable.",
                   "significant": "The look is weak: the image lacks clear light, composition or palette."}[level]
        advice = {"minor": "Keep the style and refine one lighting or colour detail.",
                  "moderate": "Choose one clear lighting setup and a specific colour palette that suit the subject.",
                  "significant": "Rewrite the HOW text with a different medium, a defined light source, a deliberate "
                                 "composition and a named palette."}[level]
    return {"critique": problem, "recommendation": advice,
            "reason": f"Rule-based ({level} change because {why})."}
