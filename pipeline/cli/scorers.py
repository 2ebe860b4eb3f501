"""`--scorer SPEC` and `--hps-arch ARCH` for `search`, `eval` and `doctor`: which scorers a search ranks by
(pipeline/scoring/specs.py), checked with the scoring part's own verdicts, kept in the run record so that
--resume ranks the same way, and loaded once beside the CLIP + aesthetic scorer.
"""
from __future__ import annotations

import argparse
from typing import Optional

from ..errors import InvalidParameter


def add_scorer_flags(group) -> None:
    group.add_argument("--scorer", action="append", metavar="SPEC",
                       help="what the search ranks by, repeatable: clip (CLIP alignment + aesthetic, the default), "
                            "pickscore[=SOURCE] (hub id or folder), hpsv2[=FILE] (HPS_v2.1_compressed.pt); several "
                            "combine by standardised score (docs/cli.md)")
    group.add_argument("--hps-arch", dest="hps_arch", metavar="ARCH",
                       help="open_clip architecture of the hpsv2 weights (default ViT-H-14) or local-dir:PATH")


def scorer_settings(args: argparse.Namespace, recorded: dict) -> dict:
    """{"scorers": [SPEC text], "hps_arch": str | None}: the flags, or what a resumed run recorded (a run keeps
    its scorers: its totals must stay comparable from round to round)."""
    given, arch = getattr(args, "scorer", None), getattr(args, "hps_arch", None)
    if "scorer" in recorded or "hps_arch" in recorded:
        if given is not None or arch is not None:
            raise InvalidParameter("scorer" if given is not None else "hps_arch",
                                   "cannot be changed when resuming: the run keeps the scorers it ranked by ("
                                   f"{', '.join(recorded.get('scorer') or ['clip'])})")
        return {"scorers": list(recorded.get("scorer") or ["clip"]), "hps_arch": recorded.get("hps_arch"),
                "hps_judge": bool(getattr(args, "hps_judge", False))}
    # hps_judge: `eval` judges with hpsv2, so --hps-arch has a user even when no hpsv2 scorer ranks the search.
    return {"scorers": list(given or ["clip"]), "hps_arch": arch, "hps_judge": bool(getattr(args, "hps_judge", False))}


def check_scorer_settings(settings: dict, models: bool = True) -> None:
    """Each spec parses, --hps-arch fits, and (with `models`: the reward models load in this process) no reward
    model is missing for good. Exit 2 naming --scorer or --hps-arch."""
    from ..scoring.sources import check_scorers, resolve_hps_arch
    from ..scoring.specs import parse_scorer_specs

    arch = settings["hps_arch"]
    if arch and settings.get("hps_judge") and "hpsv2" not in [s.name for s in parse_scorer_specs(settings["scorers"])]:
        resolve_hps_arch(arch).raise_if_invalid("hps_arch")      # for the judge only
        arch = None
    specs = check_scorers(settings["scorers"], arch, models=models)
    settings["scorers"] = [str(spec) for spec in specs]


def attach(scorer, settings: dict, say) -> object:
    """The CLIP + aesthetic scorer with the reward models the settings name (loaded here, once); a RemoteScorer
    is returned as it is: the vision service scores with its own models."""
    from ..scoring.remote import RemoteScorer
    from ..scoring.scorer_set import with_rewards
    from ..scoring.specs import is_default, parse_scorer_specs

    specs = parse_scorer_specs(settings["scorers"])
    if isinstance(scorer, RemoteScorer) or is_default(specs):
        return scorer
    say(f"loading scorers {', '.join(str(spec) for spec in specs if spec.name != 'clip')} ...")
    return with_rewards(scorer, specs, hps_arch=settings["hps_arch"])


def doctor_findings(scorers: Optional[list], hps_arch: Optional[str], clip: Optional[str],
                    aesthetic: Optional[str], vision_url: Optional[str] = None) -> list:
    """("scorer", ModelSource) per scorer a search with these flags would rank by: the verdicts `search` acts on,
    or, with the vision service, whether the service scores with it."""
    from ..scoring.sources import resolve_hps_arch, resolve_scorer
    from ..scoring.specs import parse_scorer_spec
    from ..sources import ModelSource, fail

    findings = []
    if hps_arch and not any(str(text).strip().lower().startswith("hps") for text in scorers or ()):
        findings.append(("hps-arch", fail("--hps-arch is set but no hpsv2 scorer is named",
                                          "add --scorer hpsv2 or drop --hps-arch")))
    served = _served_by(vision_url) if vision_url else None
    for text in scorers or ["clip"]:
        try:
            spec = parse_scorer_spec(text)
        except InvalidParameter as exc:
            findings.append(("scorer", fail(f"{text}: {InvalidParameter.bare(exc)}")))
            continue
        if served is not None:
            found = served.get(spec.name)
        elif spec.name == "hpsv2" and resolve_hps_arch(hps_arch).status == "fail":
            found = resolve_hps_arch(hps_arch)
        else:
            found = resolve_scorer(spec, hps_arch=hps_arch, clip=clip, aesthetic_model=aesthetic)
        if found is None:
            found = fail(f"the vision service at {vision_url} does not score with {spec.name}",
                         f"start it with --scorer {spec}")
        findings.append(("scorer", ModelSource(found.status, f"{spec}: {found.detail}", found.fix)))
    return findings


def _served_by(url: str) -> dict:
    """name -> ModelSource for the scorers the vision service says it runs (GET /health); {} when it does not
    answer (the "vision" line already says why)."""
    import requests

    from ..sources import ok

    try:
        info = requests.get(f"{url}/health", timeout=5).json().get("scorer") or {}
    except (requests.RequestException, ValueError, AttributeError):
        return {}
    names = {text.partition("=")[0]: text for text in info.get("scorers") or ["clip"]}
    names.setdefault("clip", "clip")
    return {name: ok(f"scored by the vision service at {url} ({text})") for name, text in names.items()}
