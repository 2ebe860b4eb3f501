"""A replay reproduces its source to the last bit because it renders and scores in the source's batches: float32
sums over a batch of one and a batch of four differ in the last bits (the tiny real CLIP shows it on the CPU), so
scoring a streamed run's one-by-one candidates as one round batch gave other scores (4.925121307 against
4.925120831, seen with the real models)."""
from pipeline.beam import BeamSearch
from pipeline.llm import OllamaClient
from pipeline.llm.operations import PromptEngine
from tests.beam.test_beam_collaborators import HashGenerator
from tests.beam.test_beam_streaming import MODEL, PROMPT, config

VARIES = ("run_id", "timings", "replay_of", "llm")


def test_a_replay_of_a_streamed_run_scores_in_its_batches_and_equals_it(tmp_path, fake_ollama, tiny_scorer):
    engine = PromptEngine(OllamaClient(fake_ollama.url, MODEL, retries=0), seed=3)
    source = BeamSearch(engine, HashGenerator(), tiny_scorer, config(width=64, height=64)).run(PROMPT, tmp_path, "s")
    candidates = source.report["candidates"]
    assert [c["batch"] for c in candidates if c["iteration"] == 0] == [0, 1, 2, 3]     # one by one, as streamed

    # the test has teeth: round 0's very images (rendered again, bit-identical) scored one by one give the
    # recorded scores, and scored as one batch they do not
    round0 = [c for c in candidates if c["iteration"] == 0]
    images = [HashGenerator().render(c["prompt"], c["seed"], 64, 64) for c in round0]
    alone = [tiny_scorer.score([image], PROMPT)[0] for image in images]
    together = tiny_scorer.score(images, PROMPT)
    same = lambda s, c: (s.aesthetic, s.alignment) == (c["scores"]["aesthetic"], c["scores"]["alignment"])
    assert all(same(s, c) for s, c in zip(alone, round0))
    assert not all(same(s, c) for s, c in zip(together, round0))

    replay = BeamSearch.replay(source.run_dir, HashGenerator(), tiny_scorer, tmp_path / "replays")
    strip = lambda report: {k: v for k, v in report.items() if k not in VARIES}
    assert strip(replay.report) == strip(source.report)       # every score equal, to the last bit


def test_a_record_without_batches_replays_as_one_batch_a_round(tmp_path, tiny_scorer):
    from tests.beam.test_beam_collaborators import FastOps
    source = BeamSearch(FastOps(), HashGenerator(), tiny_scorer, config(width=64, height=64, iterations=2)) \
        .run(PROMPT, tmp_path, "old")
    import json
    path = source.run_dir / "report.json"
    report = json.loads(path.read_text())
    for candidate in report["candidates"]:
        candidate.pop("batch")              # as written before batches were recorded
    path.write_text(json.dumps(report))
    generator = HashGenerator()
    replay = BeamSearch.replay(source.run_dir, generator, tiny_scorer, tmp_path / "replays")
    assert [len(call) for call in generator.calls] == [4, 4]
    # these rounds were rendered as one batch each in the source too: the replay equals it
    assert [c["scores"] for c in replay.report["candidates"]] == [c["scores"] for c in source.report["candidates"]]
