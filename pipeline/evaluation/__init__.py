"""The evaluation part: does the beam search beat simply trying more seeds, judged by what it did not optimise?

Prompt sets (`prompt_sets`, shipped ones in `sets/`), judges behind one small interface (`judges`: held-out
scorers, and a pairwise vision-model judge on an Ollama vision model (`vision_judge`)), the loop that runs each
prompt's beam search with its equal-budget control arm and judges the two winners (`runner`), the win rate and its
bootstrap interval (`stats`), and the eval folder: eval.json (`record`) and eval.html (`page`).

May import: pipeline.beam, pipeline.scoring, pipeline.record, pipeline.llm and the bottom modules.

    record = EvalRecord.create("evals", settings, [j.describe() for j in judges], load_set("smoke"))
    Evaluation(record, make_search, judges).run().data["summary"]["win_rate"]
"""
from .. import lazy_exports

_EXPORTS = {"Evaluation": ".runner", "EvalRecord": ".record", "load_set": ".prompt_sets",
            "load_prompt_file": ".prompt_sets", "PromptItem": ".prompt_sets", "Verdict": ".judges",
            "ScorerJudge": ".judges", "PairwiseJudge": ".judges", "vision_judge": ".judges",
            "summarise": ".stats", "bootstrap_interval": ".stats"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
