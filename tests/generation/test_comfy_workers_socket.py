"""The worker pool follows each prompt over the worker's websocket (ComfyUI's executing / executed /
execution_error messages) and fetches the image as soon as the output node names it; when the websocket is
missing, breaks mid-render or stays silent, polling /history takes over and the images are the same."""

import pytest

from pipeline.errors import GenerationFailed
from pipeline.generation.comfy_workers import ComfyWorkerPool
from tests.generation.test_comfy_workers import assert_rendered_as_requested, in_thread, requests_for, workflow


def history_gets(worker) -> list[str]:
    return [path for path in worker.gets if path.startswith("/history/")]


def test_prompts_are_followed_over_the_websocket_without_polling(workers):
    pool_workers = workers(2)
    pool = ComfyWorkerPool([w.url for w in pool_workers], workflow())
    requests = requests_for(4)
    results = pool.generate(requests)
    assert_rendered_as_requested(results, requests)
    assert [r.metadata["followed"] for r in results] == ["websocket"] * 4
    assert all(history_gets(w) == [] for w in pool_workers)             # nothing polled
    sent = [kind for w in pool_workers for _, kind in w.ws_sent]
    assert sent.count("executed") == 4 and sent.count("execution_success") == 4


def test_the_image_is_fetched_as_soon_as_it_is_named_before_the_prompt_is_in_history(workers):
    (worker,) = workers(1)
    worker.history_gate.clear()                  # the worker has not written the prompt's history yet
    pool = ComfyWorkerPool([worker.url], workflow())
    join = in_thread(pool.generate, requests_for(1))
    try:
        (result,) = join(timeout=30)             # returns while the history entry still does not exist
        history_when_returned = dict(worker.history)   # read before the gate opens: the worker writes it then
    finally:
        worker.history_gate.set()
    assert_rendered_as_requested([result], requests_for(1))
    assert not history_when_returned and "/view" in worker.gets


@pytest.mark.parametrize("ws_mode, why", [("none", "polling (websocket: cannot open"),
                                          ("drop", "polling (websocket: ")])
def test_a_missing_or_broken_websocket_falls_back_to_polling(workers, ws_mode, why):
    pool_workers = workers(2, ws_mode=ws_mode)
    pool = ComfyWorkerPool([w.url for w in pool_workers], workflow(), poll_s=0.02)
    requests = requests_for(3)
    results = pool.generate(requests)
    assert_rendered_as_requested(results, requests)
    assert all(r.metadata["followed"].startswith(why) for r in results), [r.metadata["followed"] for r in results]
    assert sum(len(history_gets(w)) for w in pool_workers) >= 3         # each prompt found in /history


def test_a_silent_websocket_is_checked_over_http_and_the_prompt_still_finishes(workers):
    (worker,) = workers(1, ws_mode="silent")
    pool = ComfyWorkerPool([worker.url], workflow())
    requests = requests_for(2)
    assert_rendered_as_requested(pool.generate(requests), requests)
    assert history_gets(worker)                                          # the quiet socket led to /history


def test_an_execution_error_arrives_over_the_websocket(workers):
    (worker,) = workers(1, mode="error")
    worker.history_gate.clear()                  # the error must come from the socket, not from /history
    pool = ComfyWorkerPool([worker.url], workflow())
    join = in_thread(pool.generate, requests_for(1))
    try:
        with pytest.raises(GenerationFailed, match=r"failed to render: node 8 \(KSampler\): Allocation on device"):
            join(timeout=30)
    finally:
        worker.history_gate.set()
    assert history_gets(worker) == []


def test_polling_only_when_asked(workers):
    (worker,) = workers(1)
    pool = ComfyWorkerPool([worker.url], workflow(), use_websocket=False, poll_s=0.02)
    (result,) = pool.generate(requests_for(1))
    assert result.metadata["followed"] == "polling" and history_gets(worker)
    assert "/ws" not in worker.gets
