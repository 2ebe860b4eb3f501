"""The scoring part: CLIP alignment and an aesthetic head from one image pass (`scorer`), open_clip loading
(`clip`), the aesthetic heads (`aesthetic`), human-preference scorers by name (`specs`: what `--scorer` may say and
how several make one total; `pickscore`, `hps`; `scorer_set`: the CLIP scorer with them), where all those models
come from (`sources`), and the client of the vision service that gives the same scores remotely (`remote`).

May import: pipeline.config, pipeline.errors, pipeline.images, pipeline.sources, pipeline.services.protocol.

    from pipeline.scoring import load_scorer
    scores = load_scorer("ViT-L-14/openai").score(images, "a lighthouse at dusk")
"""
from .. import lazy_exports

_EXPORTS = {name: ".scorer" for name in (
    "Scorer", "ImageScore", "load_scorer", "total_score", "describe_score", "DEFAULT_ALPHA")}
_EXPORTS["RemoteScorer"] = ".remote"
_EXPORTS.update({name: ".scorer_set" for name in ("ScorerSet", "load_scorer_set", "with_rewards")})
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
