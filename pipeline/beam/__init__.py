"""The search part: `BeamConfig` (`config`), candidates and callbacks (`types`), the LLM work of a round
(`planning`), handed out in plan order as its answers arrive (`stream`), rendering and scoring it (`render`),
ranking and survivors (`selection`), the seed-only control arm (`control`), the run loop (`run`) and
`BeamSearch`, the controller the CLI, the node and scripts call (`search`).

May import: pipeline.record, pipeline.generation.protocol (request types only), pipeline.config,
pipeline.errors, pipeline.images. It receives its LLM operations, generator and scorer as objects and never
constructs them.

    from pipeline.beam import BeamConfig, BeamSearch
    result = BeamSearch(engine, generator, scorer, BeamConfig(beam_width=4, keep_top=2)).run("a lighthouse")
"""
from .. import lazy_exports

_EXPORTS = {"BeamSearch": ".search", "BeamConfig": ".config", "RESUME_OVERRIDES": ".config",
            "REPLAY_OVERRIDES": ".config"}
_EXPORTS.update({name: ".types" for name in (
    "Candidate", "ProgressEvent", "SearchCallbacks", "SearchResult", "candidate_id")})
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
