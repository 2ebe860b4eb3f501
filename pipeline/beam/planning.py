"""The LLM side of a round: from the user prompt (round 0) or the surviving parents (later rounds) to the
round's planned candidates, as a RoundStream of units (stream.py). Calls run concurrently, bounded by
`llm_concurrency`; each is wrapped so that should_stop is polled before and after it. With an engine that streams
(PromptEngine(stream=True)) each child is handed to the stream as soon as its part of the answer is written.
A parent sure to survive before its round starts is asked early (`start_early`, early.py); its round takes that
unit over.

A round whose children all repeat earlier prompts is asked once more (`start_round(..., nudge=True)`): every
parent again, shown the texts of its half already written, a little warmer."""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import InvalidParameter, ModelNotFound, PromptBeamError
from .config import BeamConfig
from .early import EarlyUnit
from .selection import DuplicateIndex, choose_dimension, derive_seed, edit_history, normalise_prompt
from .stream import FAILED_COMBINE, FAILED_NEGATIVE, PlanBuilder, RoundStream
from .types import Candidate, StopRequested, describe_error

ROUND0_PAIRS_PER_REQUEST = 2     # round 0's N pairs are asked for two at a time (N=4: two requests)


@dataclass
class RoundPlan:
    iteration: int
    dimension: Optional[str]                        # "what" | "how" | "mixed" (adaptive) | None (round 0)
    candidates: list = field(default_factory=list)  # Candidates, "pending" or failed at the LLM stage
    duplicates: list = field(default_factory=list)  # dropped near-duplicates: {parent, dimension, what, how, prompt, duplicate_of}
    nudged: bool = False                            # asked once more after every child repeated an earlier prompt


@dataclass
class _Draft:
    """A child before it has an id: its halves, where it came from and what it cost."""
    parent: Optional[Candidate]
    dimension: Optional[str]
    what: str
    how: str
    key: tuple                                      # path for this draft's LLM seeds
    critique: Optional[dict] = None
    prompt: str = ""
    negative: Optional[str] = None
    error: Optional[str] = None
    failed_stage: Optional[str] = None              # FAILED_COMBINE / FAILED_NEGATIVE; None with error = halves
    fallbacks: list = field(default_factory=list)
    duplicate_of: Optional[str] = None
    parent_evaluation: Optional[dict] = None        # what a vision critic newly saw in the parent's image


class KnownPrompts:
    """The prompts already rendered in the run, so a new prompt that repeats one is dropped before rendering."""

    def __init__(self):
        self.prompts = DuplicateIndex()
        self.pairs: dict[tuple, str] = {}

    def add(self, candidate: Candidate) -> None:
        self.pairs.setdefault((normalise_prompt(candidate.what), normalise_prompt(candidate.how)), candidate.id)
        if candidate.prompt:
            self.prompts.add(candidate.id, candidate.prompt)


class RoundPlanner:
    """Starts each round's LLM work as a RoundStream of units.

    With an engine that has the per-round operations (PromptEngine.expand_pairs / refine_children) round 0 is one
    request and round k one request per parent, each parent a unit of its own, so a parent's children can be
    rendered while the other parents are still with the LLM. Other ops objects (only the single operations) get
    the older plan: expand x2 -> combine per pair; critique -> refine -> combine per parent, as one unit a round.
    """

    def __init__(self, ops, config: BeamConfig, user_prompt: str, check_stop: Callable[[], None],
                 should_stop: Callable[[], bool] = lambda: False, critic=None,
                 image_of: Optional[Callable[[Candidate], Any]] = None):
        self.ops = ops
        self.config = config
        self.user_prompt = user_prompt
        self.check_stop = check_stop
        self.should_stop = should_stop
        # A vision critic: the same model as the text model looks at the parent's image inside the children
        # request (one request); another model evaluates the image first and the text model writes from that.
        self.critic = critic
        self.critic_in_request = critic is not None and _same_model(critic, ops)
        self.image_of = image_of
        self.calls = 0
        self.fallbacks = 0
        self.critic_calls = 0                       # requests that carried a parent's image
        self._lock = threading.Lock()
        self._early: dict[tuple, EarlyUnit] = {}    # (round, parent id, half) -> its unit, started early
        # One slot per request in flight, shared by the rounds' units and the early ones: llm_concurrency holds
        # across rounds too, whichever units run.
        self._slots = threading.Semaphore(max(1, config.llm_concurrency))

    @property
    def per_round_ops(self) -> bool:
        return hasattr(self.ops, "expand_pairs") and hasattr(self.ops, "refine_children")

    @property
    def streaming(self) -> bool:
        """The per-round operations hand each entry over as it is written (PromptEngine(stream=True))."""
        return self.per_round_ops and bool(getattr(self.ops, "stream", False))

    def _require_llm(self, iteration: int) -> None:
        if self.ops is None:
            raise InvalidParameter("llm", f"round {iteration} has no recorded prompts, so it needs the prompt "
                                          f"operations (an LLM): pass them to BeamSearch")

    def start_round(self, iteration: int, parents: Sequence[Candidate], pool: Sequence[Candidate],
                    candidates: Mapping[str, Candidate], known: KnownPrompts,
                    resumed: Optional[RoundPlan] = None, planned_parents: Sequence[str] = (),
                    nudge: bool = False) -> RoundStream:
        """The round's units, already running. `resumed` is a partly planned round from the record: its
        candidates keep their ids and only the parents not in `planned_parents` are asked for again (a parent
        whose first children were planned before the stop is asked for the rest). `nudge`: `resumed` is this
        round, whose children all repeated earlier prompts; every parent is asked once more to avoid them."""
        self._require_llm(iteration)
        if iteration == 0:
            plan = RoundPlan(0, None)
            builder = PlanBuilder(plan, known, lambda draft, index: self._image_seed(0, index))
            n = self.config.beam_width
            if not self.per_round_ops:
                return RoundStream(builder, [lambda: self._old_initial(known)], 1, self.should_stop, expected=n)
            # The N pairs in requests of ROUND0_PAIRS_PER_REQUEST: the first pairs render while the rest are
            # written. A fixed size, not llm_concurrency: a setting of concurrency must never change a report.
            groups = -(-n // ROUND0_PAIRS_PER_REQUEST)
            sizes = [n // groups + (1 if i < n % groups else 0) for i in range(groups)]
            units = [lambda emit=None, i=i, size=size: self._initial_unit(i, groups, size, sum(sizes[:i]), emit)
                     for i, size in enumerate(sizes)]
            return RoundStream(builder, units, self.config.llm_concurrency, self.should_stop, expected=n,
                               streaming=self.streaming, interleave=True)

        n = self.config.children_per_parent
        dims = [choose_dimension(self.config.dimension_policy, p, pool, iteration) for p in parents]
        if self.config.dimension_policy == "alternate":
            label = dims[0] if dims else None
        else:
            label = dims[0] if len(set(dims)) == 1 else "mixed"

        def seed_of(draft: _Draft, index: int) -> int:
            if self.config.seed_policy == "inherit":
                return draft.parent.seed
            return self._image_seed(iteration, index)
        plan = resumed if resumed is not None else RoundPlan(iteration, label)
        builder = PlanBuilder(plan, known, seed_of)
        expected = n * len(parents)
        if not self.per_round_ops:
            return RoundStream(builder, [lambda: self._old_refinement(iteration, parents, dims, candidates, known)],
                               1, self.should_stop, expected=expected)
        if nudge:
            plan.nudged, planned_parents = True, ()
        todo = [(p, dim, 0 if nudge else _planned_children(plan, p.id))
                for p, dim in zip(parents, dims) if p.id not in set(planned_parents)]
        early = self._take_early(iteration) if resumed is None and not nudge else {}
        units = [early.pop((p.id, dim)) if (p.id, dim) in early else
                 lambda emit=None, p=p, dim=dim, skip=skip: self._parent_unit(
                     iteration, p, dim, edit_history(candidates, p.id), known, emit, skip=skip,
                     avoid=_written(p, dim, plan, candidates) if nudge else ())
                 for p, dim, skip in todo]
        for unit in early.values():       # started for a parent that is not one after all: nobody takes it
            unit.cancel()
        return RoundStream(builder, units, self.config.llm_concurrency, self.should_stop,
                           parents=[p.id for p, _, _ in todo], planned_parents=planned_parents, expected=expected,
                           streaming=self.streaming, interleave=True, offsets=[skip for _, _, skip in todo])

    # ---- parents asked before their round (early.py) ------------------------------------------------------
    def start_early(self, iteration: int, parent: Candidate, history: list, known: KnownPrompts,
                    image=None) -> None:
        """Start `parent`'s unit of round `iteration` now, while the round before is still rendering; the round
        takes it over when it starts. `image`: the parent's image (it may not be recorded yet). Like every unit, it
        waits for one of the llm_concurrency slots before it asks."""
        dim = choose_dimension(self.config.dimension_policy, parent, [], iteration)
        if not self.per_round_ops or (iteration, parent.id, dim) in self._early:
            return
        image_of = (lambda _: image) if image is not None else self.image_of
        self._early[(iteration, parent.id, dim)] = EarlyUnit(
            lambda emit: self._parent_unit(iteration, parent, dim, history, known, emit, image_of=image_of),
            self.streaming)

    def has_early(self, iteration: int, parent_id: str) -> bool:
        return any(key[:2] == (iteration, parent_id) for key in self._early)

    def _take_early(self, iteration: int) -> dict:
        """The early units of this round by (parent, half); those of other rounds are cancelled."""
        taken = {}
        for (round_, parent_id, dim), unit in list(self._early.items()):
            if round_ == iteration:
                taken[(parent_id, dim)] = unit
            else:
                unit.cancel()
        self._early.clear()
        return taken

    def cancel_early(self) -> None:
        """The search ends (or stops): no round will take the early units."""
        for unit in self._early.values():
            unit.cancel()
        self._early.clear()

    # ---- per-round operations: one request for round 0, one per parent after --------------------------------
    def _initial_unit(self, group: int, groups: int, size: int, first: int,
                      emit: Optional[Callable] = None) -> list:
        with self._slot():
            return self._initial(group, groups, size, first, emit)

    def _initial(self, group: int, groups: int, size: int, first: int, emit: Optional[Callable]) -> list:
        seed = self._seed("expand_pairs") if groups == 1 else self._seed("expand_pairs", group)
        made: list = []            # drafts handed over while the answer was being written

        def on_item(index: int, entry: dict, _critique) -> None:
            made.append(self._with_negatives([self._pair_draft(first + index, entry)])[0])
            emit(made[-1])
        entries, _ = self._call("expand_pairs", self.ops.expand_pairs, self.user_prompt, size,
                                descriptiveness=self.config.descriptiveness, style=self.config.style,
                                combine=self.config.combine_mode == "llm", seed=seed, part=(group, groups),
                                **({"on_item": on_item} if emit else {}))
        if not entries and not made:
            raise PromptBeamError("the LLM returned no WHAT/HOW pairs for the prompt")
        rest = [self._pair_draft(i, entry) for i, entry in enumerate(entries[:size], start=first)][len(made):]
        return made + self._with_negatives(rest)

    def _pair_draft(self, index: int, entry: dict) -> _Draft:
        return self._templated(_Draft(None, None, entry["what"], entry["how"], key=(0, index),
                                      prompt=entry.get("prompt") or "", fallbacks=list(entry.get("fallbacks") or [])))

    def _parent_unit(self, iteration: int, p: Candidate, dim: str, history: list, known: KnownPrompts,
                     emit: Optional[Callable] = None, skip: int = 0, avoid: Sequence[str] = (),
                     image_of: Optional[Callable[[Candidate], Any]] = None) -> list:
        with self._slot():
            return self._parent(iteration, p, dim, history, known, emit, skip, avoid, image_of)

    def _parent(self, iteration: int, p: Candidate, dim: str, history: list, known: KnownPrompts,
                emit: Optional[Callable], skip: int, avoid: Sequence[str],
                image_of: Optional[Callable[[Candidate], Any]]) -> list:
        """One parent's children. `skip`: the first children are already in the plan (a resumed round); `avoid`:
        ask again after a round of repeats (see start_round's nudge). With a critic, what it sees in the parent's
        image comes first (once per parent: its image does not change), and goes on the drafts for the record."""
        seen, image, new_evaluation = _usable_evaluation(p.evaluation), None, None
        image_of = image_of or self.image_of
        if self.critic is not None and seen is None:
            if self.critic_in_request:
                image = image_of(p)
            else:
                new_evaluation = self._evaluate(p, image_of)
                seen = _usable_evaluation(new_evaluation)
        looks = {"image": image} if image is not None else {"evaluation": seen} if seen else {}
        if new_evaluation is not None and new_evaluation.get("error"):
            looks["fallbacks"] = ["critic"]          # the critic saw nothing usable: scores alone, as without one
        drafts = self._children(iteration, p, dim, history, known, emit, skip, avoid, looks)
        if image is not None:
            with self._lock:
                self.critic_calls += 1
            new_evaluation = _evaluation_record(looks.get("answer", {}).get("evaluation"),
                                                looks.get("answer", {}).get("evaluation_problem") or
                                                looks.get("problem"), self.critic)
        for draft in drafts:       # recorded on the parent once the unit is taken (stream.RoundStream)
            draft.parent_evaluation = new_evaluation
        return drafts

    def _children(self, iteration: int, p: Candidate, dim: str, history: list, known: KnownPrompts,
                  emit: Optional[Callable], skip: int, avoid: Sequence[str], looks: dict) -> list:
        """The children request of _parent_unit. `looks` carries the image or the critic's evaluation in, and the
        answer (or the problem that sank it) back out."""
        n = self.config.children_per_parent
        made: list = []            # drafts handed over while the answer was being written

        def on_item(index: int, child: dict, critique) -> None:
            if index >= skip:
                made.append(self._child_draft(iteration, p, dim, index, child, critique, known, looks))
                emit(made[-1])
        seed = self._seed("refine_children", iteration, p.id, *(["nudge"] if avoid else []))
        try:
            answer, _ = self._call(
                "refine_children", self.ops.refine_children, self.user_prompt, p.what, p.how, p.prompt,
                dict(p.scores), dim, n, history=history, caption=p.caption,
                descriptiveness=self.config.descriptiveness, style=self.config.style,
                combine=self.config.combine_mode == "llm", seed=seed,
                **({"on_item": on_item} if emit else {}), **({"avoid": list(avoid)} if avoid else {}),
                **{key: looks[key] for key in ("image", "evaluation") if key in looks})
        except (StopRequested, KeyboardInterrupt, ModelNotFound):
            raise                  # a model that is gone fails every parent alike: the search stops and says so
        except Exception as exc:   # this parent's children fail; the other parents go on
            looks["problem"] = describe_error(exc)
            return made + [_Draft(p, dim, p.what, p.how, key=(iteration, p.id, j),
                                  error=f"critique failed: {describe_error(exc)}")
                           for j in range(skip + len(made), n)]
        looks["answer"] = answer
        critique = answer.get("critique")
        rest = [self._child_draft(iteration, p, dim, j, child, critique, known, looks)
                for j, child in enumerate(answer.get("children", [])[:n]) if j >= skip + len(made)]
        return made + rest

    def _evaluate(self, p: Candidate, image_of: Callable[[Candidate], Any]) -> dict:
        """A separate critic's look at the parent's image -> its evaluation record (with `error` when it failed;
        the children are then written from the scores alone, as without a critic)."""
        try:
            self.check_stop()
            result = self.critic.evaluate_image(self.user_prompt, image_of(p),
                                                seed=self._seed("critic", p.id))
            self.check_stop()
        except (StopRequested, KeyboardInterrupt):
            raise
        except Exception as exc:
            return _evaluation_record(None, describe_error(exc), self.critic)
        finally:
            with self._lock:
                self.critic_calls += 1
        value, _ = _unwrap(result)
        return _evaluation_record(value, getattr(result, "problem", ""), self.critic)

    def _child_draft(self, iteration: int, p: Candidate, dim: str, index: int, child: dict, critique,
                     known: KnownPrompts, looks: Optional[dict] = None) -> _Draft:
        fallbacks = list((looks or {}).get("fallbacks", [])) + list(child.get("fallbacks") or [])
        draft = self._templated(_Draft(p, dim, child["what"], child["how"], key=(iteration, p.id, index),
                                       critique=_plain_dict(critique), prompt=child.get("prompt") or "",
                                       fallbacks=fallbacks))
        if (normalise_prompt(draft.what), normalise_prompt(draft.how)) not in known.pairs:
            self._with_negatives([draft])      # a pair twin is dropped before rendering: no negative for it
        return draft

    def _templated(self, draft: _Draft) -> _Draft:
        if self.config.combine_mode == "template" or not draft.prompt.strip():
            draft.prompt = _unwrap(self.ops.combine_template(draft.what, draft.how, style=self.config.style))[0]
        draft.prompt = (draft.prompt or "").strip()
        return draft

    def _with_negatives(self, drafts: list) -> list:
        """Negative prompts, one request each (only with use_negative), run inside the unit."""
        if not self.config.use_negative:
            return drafts
        for draft in drafts:
            if draft.error:
                continue
            try:
                value, fallback = self._call("negative", self.ops.negative, draft.prompt,
                                             seed=self._seed("negative", *draft.key))
            except (StopRequested, KeyboardInterrupt):
                raise
            except Exception as exc:
                draft.error, draft.failed_stage = f"negative failed: {describe_error(exc)}", FAILED_NEGATIVE
                continue
            draft.negative = (_text(value) or "").strip() or None
            if fallback:
                draft.fallbacks.append("negative")
        return drafts

    # ---- single operations (ops without the per-round ones) -------------------------------------------------
    def _old_initial(self, known: KnownPrompts) -> list:
        """N WHAT+HOW pairs from ONE expand call per dimension (pair i with i), then combined."""
        n = self.config.beam_width
        expansions = self._concurrently([
            lambda dim=dim: self._call("expand_" + dim, self.ops.expand, self.user_prompt, dim, n,
                                       seed=self._seed("expand", dim))
            for dim in ("what", "how")])
        for outcome in expansions:
            if isinstance(outcome, BaseException):
                raise outcome    # without an expansion the run cannot start
        (whats, what_fb), (hows, how_fb) = expansions
        whats, hows = _texts(whats), _texts(hows)
        if not whats or not hows:
            raise PromptBeamError(f"the LLM returned no {'WHAT' if not whats else 'HOW'} variants for the prompt")
        drafts = []
        for i in range(n):
            draft = _Draft(None, None, whats[i % len(whats)], hows[i % len(hows)], key=(0, i))
            draft.fallbacks += (["expand_what"] if what_fb else []) + (["expand_how"] if how_fb else [])
            drafts.append(draft)
        return self._old_finish(drafts, known)

    def _old_refinement(self, iteration: int, parents: Sequence[Candidate], dims: list,
                        candidates: Mapping[str, Candidate], known: KnownPrompts) -> list:
        n_children = self.config.children_per_parent
        critiques = self._concurrently([
            lambda p=p, dim=dim: self._call(
                "critique", self.ops.critique, self.user_prompt, p.what, p.how, p.prompt, dict(p.scores), dim,
                caption=p.caption, seed=self._seed("critique", iteration, p.id))
            for p, dim in zip(parents, dims)])

        def refine(p, dim, critique):
            if isinstance(critique, BaseException):
                return critique
            return self._call("refine", self.ops.refine_variants, getattr(p, dim), dim, critique[0],
                              self.user_prompt, n_children, history=edit_history(candidates, p.id),
                              seed=self._seed("refine", iteration, p.id))
        variants = self._concurrently([
            lambda p=p, dim=dim, c=c: refine(p, dim, c) for p, dim, c in zip(parents, dims, critiques)])

        drafts = []
        for p, dim, critique, outcome in zip(parents, dims, critiques, variants):
            if isinstance(outcome, BaseException):
                stage = "critique" if isinstance(critique, BaseException) else "refine"
                for j in range(n_children):
                    drafts.append(_Draft(p, dim, p.what, p.how, key=(iteration, p.id, j),
                                         error=f"{stage} failed: {describe_error(outcome)}"))
                continue
            halves, refine_fb = outcome
            critique_value, critique_fb = critique
            for j, half in enumerate(_texts(halves)[:n_children]):
                what, how = (half, p.how) if dim == "what" else (p.what, half)
                draft = _Draft(p, dim, what, how, key=(iteration, p.id, j), critique=_plain_dict(critique_value))
                draft.fallbacks += (["critique"] if critique_fb else []) + (["refine"] if refine_fb else [])
                drafts.append(draft)
        return self._old_finish(drafts, known)

    def _old_finish(self, drafts: list, known: KnownPrompts) -> list:
        """Combine and negate the drafts that are not duplicates. Duplicates are found here only to save those
        calls; PlanBuilder makes the decisions that count (the same ones)."""
        round_pairs: dict[tuple, str] = {}
        for i, draft in enumerate(drafts):
            if draft.error:
                continue
            pair = (normalise_prompt(draft.what), normalise_prompt(draft.how))
            draft.duplicate_of = known.pairs.get(pair) or round_pairs.get(pair)
            round_pairs.setdefault(pair, draft.duplicate_of or f"draft{i}")

        live = [d for d in drafts if not d.error and not d.duplicate_of]
        combined = self._concurrently([lambda d=d: self._combine(d) for d in live])
        for draft, outcome in zip(live, combined):
            if isinstance(outcome, BaseException):
                draft.error, draft.failed_stage = f"combine failed: {describe_error(outcome)}", FAILED_COMBINE
                continue
            draft.prompt, fallback = outcome
            draft.prompt = (draft.prompt or "").strip()
            if fallback:
                draft.fallbacks.append("combine")
            if not draft.prompt:
                draft.error = "combine failed: the LLM returned an empty prompt"
                draft.failed_stage = FAILED_COMBINE

        round_prompts = DuplicateIndex()
        for i, draft in enumerate(drafts):
            if draft.error or draft.duplicate_of:
                continue
            draft.duplicate_of = known.prompts.find(draft.prompt) or round_prompts.find(draft.prompt)
            if not draft.duplicate_of:
                round_prompts.add(f"draft{i}", draft.prompt)

        if self.config.use_negative:
            wanted = [d for d in live if not d.error and not d.duplicate_of]
            negatives = self._concurrently([
                lambda d=d: self._call("negative", self.ops.negative, d.prompt, seed=self._seed("negative", *d.key))
                for d in wanted])
            for draft, outcome in zip(wanted, negatives):
                if isinstance(outcome, BaseException):
                    draft.error = f"negative failed: {describe_error(outcome)}"
                    draft.failed_stage = FAILED_NEGATIVE
                else:
                    draft.negative = (_text(outcome[0]) or "").strip() or None
                    if outcome[1]:
                        draft.fallbacks.append("negative")
        for draft in drafts:
            if not draft.error:
                draft.duplicate_of = None     # decided again, in order, by PlanBuilder
        return drafts

    def _combine(self, draft: _Draft):
        if self.config.combine_mode == "template":
            self.check_stop()
            return _unwrap(self.ops.combine_template(draft.what, draft.how, style=self.config.style))
        return self._call("combine", self.ops.combine, draft.what, draft.how,
                          descriptiveness=self.config.descriptiveness, style=self.config.style,
                          seed=self._seed("combine", *draft.key))

    # ---- plumbing -----------------------------------------------------------------------------------------------
    def _call(self, name: str, fn: Callable, *args, **kwargs) -> tuple[Any, bool]:
        """One LLM operation with stop checks around it -> (value, fallback)."""
        self.check_stop()
        result = fn(*args, **kwargs)
        self.check_stop()
        value, fallback = _unwrap(result)
        with self._lock:
            self.calls += 1
            self.fallbacks += int(fallback)
        return value, fallback

    def _concurrently(self, tasks: list) -> list:
        """Run tasks on at most llm_concurrency threads; results (or the exceptions raised) in task order.

        A stop request ends the phase at once: calls in flight are abandoned, not waited for, so an interrupt
        takes effect within one stop-check rather than one LLM call.
        """
        if not tasks:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.config.llm_concurrency, len(tasks)),
                                  thread_name_prefix="promptbeam-llm")
        try:
            futures = [pool.submit(task) for task in tasks]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if isinstance(future.exception(), (StopRequested, KeyboardInterrupt)):
                        raise future.exception()
            return [f.exception() if f.exception() is not None else f.result() for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    @contextmanager
    def _slot(self):
        """One of the llm_concurrency slots for a unit's requests, waited for with the stop flag polled."""
        while not self._slots.acquire(timeout=0.01):
            self.check_stop()
        try:
            yield
        finally:
            self._slots.release()

    def _seed(self, *parts) -> int:
        return derive_seed(self.config.seed, "llm", *parts)

    def _image_seed(self, iteration: int, index: int) -> int:
        return derive_seed(self.config.seed, "image", iteration, index)


def _model_of(ops) -> tuple:
    client = getattr(ops, "client", None)
    return getattr(client, "base_url", None), getattr(client, "model", None)


def _same_model(critic, ops) -> bool:
    return critic is ops or (_model_of(critic)[1] is not None and _model_of(critic) == _model_of(ops))


def _evaluation_record(value: Optional[Mapping], problem: Optional[str], critic) -> dict:
    """report["candidates"][i]["evaluation"]: what the critic saw, or why it saw nothing (`error`)."""
    model = _model_of(critic)[1] or type(critic).__name__
    if value:
        return {"analysis": value.get("analysis", ""), "strengths": list(value.get("strengths") or []),
                "weaknesses": list(value.get("weaknesses") or []), "model": model}
    return {"analysis": "", "strengths": [], "weaknesses": [], "model": model,
            "error": f"no usable evaluation: {problem or 'the answer had none'}"}


def _usable_evaluation(evaluation: Optional[Mapping]) -> Optional[Mapping]:
    """An evaluation worth reusing: a survivor's image does not change, so what the critic saw stays true."""
    return evaluation if evaluation and not evaluation.get("error") else None


def _planned_children(plan: RoundPlan, parent: str) -> int:
    """How many of a parent's children a resumed round already planned (candidates and dropped duplicates)."""
    return sum(1 for c in plan.candidates if c.parent == parent) + \
        sum(1 for d in plan.duplicates if d.get("parent") == parent)


def _written(parent: Candidate, dimension: str, plan: RoundPlan, candidates: Mapping[str, Candidate]) -> list:
    """The texts of `dimension` a nudged parent must avoid: its own, its earlier children's, and the repeats it
    wrote this round."""
    texts = [getattr(parent, dimension)]
    texts += [getattr(c, dimension) for c in candidates.values() if c.parent == parent.id and c.dimension == dimension]
    texts += [d[dimension] for d in plan.duplicates if d.get("parent") == parent.id and d.get(dimension)]
    return list(dict.fromkeys(t for t in texts if t))


def _unwrap(result) -> tuple[Any, bool]:
    """PromptEngine operations return OpResult(value, fallback, stats); combine_template returns a plain str."""
    if hasattr(result, "value") and hasattr(result, "fallback"):
        return result.value, bool(result.fallback)
    return result, False


def _text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _texts(values) -> list[str]:
    if isinstance(values, str):
        values = [values]
    return [text.strip() for text in (_text(v) for v in (values or [])) if text.strip()]


def _plain_dict(value) -> Optional[dict]:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    return {"critique": str(value), "recommendation": "", "reason": ""}

