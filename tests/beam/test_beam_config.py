"""BeamConfig: every bad parameter is refused before any work, with its name in the message."""
import pytest

from pipeline.beam.search import BeamConfig, BeamSearch
from pipeline.errors import InvalidParameter

from tests.beam.test_beam_collaborators import FastOps, HashGenerator, StatsScorer


@pytest.mark.parametrize("changes, name, words", [
    ({"beam_width": 0}, "beam_width", ">= 1"),
    ({"beam_width": 2.5}, "beam_width", "integer"),
    ({"keep_top": 0}, "keep_top", ">= 1"),
    ({"beam_width": 3, "keep_top": 4}, "keep_top", "<= beam_width (3)"),
    ({"iterations": 0}, "iterations", ">= 1"),
    ({"alpha": 1.5}, "alpha", "[0, 1]"),
    ({"alpha": -0.1}, "alpha", "[0, 1]"),
    ({"alpha": float("nan")}, "alpha", "finite"),
    ({"seed": -1}, "seed", ">= 0"),
    ({"seed": 2**64}, "seed", "2**64"),
    ({"dimension_policy": "random"}, "dimension_policy", "alternate, adaptive"),
    ({"seed_policy": "same"}, "seed_policy", "inherit, fresh"),
    ({"combine_mode": "concat"}, "combine_mode", "llm, template"),
    ({"style": "anime"}, "style", "natural, booru"),
    ({"descriptiveness": 4}, "descriptiveness", "1, 2, 3"),
    ({"patience": 0}, "patience", ">= 1"),
    ({"target_score": "high"}, "target_score", "finite number"),
    ({"time_budget_s": 0}, "time_budget_s", "> 0"),
    ({"width": 1000}, "width", "multiple of 16"),
    ({"height": 8}, "height", ">= 16"),
    ({"steps": 0}, "steps", ">= 1"),
    ({"guidance": -1.0}, "guidance", ">= 0"),
    ({"score_text": "  "}, "score_text", "non-empty"),
    ({"low_vram": "yes"}, "low_vram", "true or false"),
    ({"llm_concurrency": 0}, "llm_concurrency", ">= 1"),
])
def test_invalid_parameters_are_named(changes, name, words):
    with pytest.raises(InvalidParameter) as info:
        BeamConfig(**changes).validate()
    assert info.value.name == name
    assert str(info.value).startswith(f"{name}: ")
    assert words in str(info.value)


def test_defaults_are_valid_and_budget_follows_floor_n_over_m():
    config = BeamConfig().validate()
    assert (config.beam_width, config.keep_top, config.iterations, config.alpha) == (4, 2, 3, 0.7)
    assert config.children_per_parent == 2 and config.image_budget == 4 + 2 * 4
    # N=5, M=2: 2 children per parent, the remainder is dropped, so a refinement round renders 4 images
    assert BeamConfig(beam_width=5, keep_top=2, iterations=4).image_budget == 5 + 3 * 4


def test_round_trip_through_dict_ignores_extra_keys():
    config = BeamConfig(beam_width=6, keep_top=3, seed=99, patience=2, control_arm=True)
    data = config.to_dict() | {"generator": {"model": "x"}, "scorer": {}, "llm": None}
    assert BeamConfig.from_dict(data) == config


def test_search_validates_before_any_work(tmp_path):
    ops, generator = FastOps(), HashGenerator()
    with pytest.raises(InvalidParameter, match="keep_top"):
        BeamSearch(ops, generator, StatsScorer(), BeamConfig(beam_width=2, keep_top=3))
    search = BeamSearch(ops, generator, StatsScorer(), BeamConfig(width=32, height=32))
    with pytest.raises(InvalidParameter, match="^prompt: "):
        search.run("   ", tmp_path)
    assert ops.calls == [] and generator.calls == [] and list(tmp_path.iterdir()) == []
