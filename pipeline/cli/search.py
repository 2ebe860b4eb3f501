"""`python -m pipeline search PROMPT`: the standalone beam search (Ollama + diffusers Flux + CLIP/aesthetic scorer).

Order of work, so that mistakes cost seconds, not a 30 GB model load:
  1. every parameter is checked (BeamConfig, image size, files named by flags, the --resume record)  -> exit 2
  2. Ollama is asked whether it answers and has the model                                            -> exit 1
  3. the scorer and Flux are loaded, then the search runs with a tqdm bar on stderr
The first Ctrl-C asks the search to stop at its next checkpoint (the record stays complete and resumable, exit
130); a second Ctrl-C kills the process at once.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from ..beam.config import RESUME_OVERRIDES, BeamConfig  # no torch import: parameter errors answer at once
from ..config import Settings
from ..errors import Interrupted, InvalidParameter, PromptBeamError
from ..record.storage import RecordNotWritable
from . import checks, remote, scorers, workers
from .exit_codes import EXIT_INTERRUPTED, EXIT_OK
from .models import check_models, model_settings, record_cli_settings, recorded_models

# BeamConfig fields set by flags (dest == field name). Anything left None keeps BeamConfig's default.
CONFIG_FLAGS = ("beam_width", "keep_top", "iterations", "alpha", "seed", "dimension_policy", "seed_policy",
                "patience", "target_score", "time_budget_s", "width", "height", "steps", "guidance",
                "descriptiveness", "style", "combine_mode", "use_negative", "score_text", "captions", "low_vram",
                "llm_concurrency", "control_arm", "judge_budget", "judge_margin")
RESUME_HINT = "python -m pipeline search --resume {run_dir}"


def add_parser(commands, parents) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "search", parents=parents, help="run a beam search for one prompt (Ollama + Flux + CLIP scorer)",
        description="Beam search over LLM-written prompts: expand, render, score, keep the best, refine. "
                    "Model defaults come from OLLAMA_BASE_URL, OLLAMA_MODEL, FLUX_MODEL, FLUX_LORAS, CLIP_MODEL "
                    "and AESTHETIC_MODEL.")
    p.add_argument("prompt", nargs="?", metavar="PROMPT", help="what you want to see (omit with --resume)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its report.json")
    p.add_argument("--out", metavar="DIR", default="runs", help="root folder of run directories (default: ./runs)")
    add_search_flags(p)
    return p


def add_search_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of a search besides PROMPT, --resume and --out (`eval` takes them too)."""
    beam = p.add_argument_group("search")
    beam.add_argument("--beam-width", dest="beam_width", type=int, metavar="N", help="candidates per round (4)")
    beam.add_argument("--keep-top", dest="keep_top", type=int, metavar="M", help="survivors per round, <= N (2)")
    beam.add_argument("--iterations", type=int, metavar="K", help="rounds, round 0 included (3)")
    beam.add_argument("--alpha", type=float, help="total = alpha*alignment + (1-alpha)*10*aesthetic (0.7)")
    beam.add_argument("--seed", type=int, help="run seed; every candidate seed derives from it (0)")
    beam.add_argument("--dimension-policy", dest="dimension_policy", choices=("alternate", "adaptive"),
                      help="which half to refine each round: alternate WHAT/HOW, or the weaker score's half")
    beam.add_argument("--seed-policy", dest="seed_policy", choices=("inherit", "fresh"),
                      help="children reuse their parent's image seed (inherit) or get new ones (fresh)")
    beam.add_argument("--patience", type=int, metavar="ROUNDS", help="stop after this many rounds without a "
                                                                     "better best")
    beam.add_argument("--target-score", dest="target_score", type=float, metavar="TOTAL",
                      help="stop once the best total reaches this")
    beam.add_argument("--time-budget", dest="time_budget_s", type=float, metavar="SECONDS",
                      help="stop starting new work after this many seconds")
    beam.add_argument("--descriptiveness", type=int, choices=(1, 2, 3), help="prompt length: 1 short .. 3 long")
    beam.add_argument("--style", choices=("natural", "booru"), help="prompt wording style")
    beam.add_argument("--combine-mode", dest="combine_mode", choices=("llm", "template"),
                      help="merge WHAT and HOW with the LLM or with a fixed template")
    beam.add_argument("--negative", dest="use_negative", action="store_true", default=None,
                      help="have the LLM write a negative prompt per candidate")
    beam.add_argument("--score-text", dest="score_text", metavar="TEXT",
                      help="text to score alignment against (default: PROMPT)")
    beam.add_argument("--captions", action="store_true", default=None,
                      help="ask the scorer for captions to feed the critique")
    beam.add_argument("--llm-concurrency", dest="llm_concurrency", type=int, metavar="N",
                      help="LLM calls in flight at once (4)")
    beam.add_argument("--control-arm", dest="control_arm", action="store_true", default=None,
                      help="also spend the same image budget on seeds only, for an honest comparison")

    judges = p.add_argument_group("judges that see the image (Ollama vision models; docs/judges.md)")
    judges.add_argument("--critic-model", dest="critic_model", metavar="NAME",
                        help="a vision model looks at each parent's image before its children are written "
                             "(e.g. qwen2.5vl:7b; the same as --llm-model: one request a parent, another: two)")
    judges.add_argument("--judge-model", dest="judge_model", metavar="NAME",
                        help="a vision model compares the candidates near the keep-top cut in pairs, both orders "
                             "(e.g. qwen2.5vl:7b, qwen3-vl:8b, gemma3:12b)")
    judges.add_argument("--judge-budget", dest="judge_budget", type=int, metavar="N",
                        help="pairs the judge may decide a round, two requests each (4)")
    judges.add_argument("--judge-margin", dest="judge_margin", type=float, metavar="SD",
                        help="judge the candidates whose total is within SD standard deviations of the round's "
                             "totals from the cut (1.0)")

    image = p.add_argument_group("image")
    image.add_argument("--width", type=int, help="pixels, multiple of 16 (1024)")
    image.add_argument("--height", type=int, help="pixels, multiple of 16 (1024)")
    image.add_argument("--steps", type=int, help="denoising steps (4; FLUX.1-dev wants ~28)")
    image.add_argument("--guidance", type=float, help="Flux guidance (3.5; ignored by schnell)")
    image.add_argument("--true-cfg", dest="true_cfg", type=float, metavar="SCALE",
                       help="with --negative: true CFG scale > 1 makes Flux use the negative prompts (a second "
                            "transformer pass per step, twice the cost); at 1 (default) they are ignored and "
                            "each candidate records negative_ignored")

    models = p.add_argument_group("models (defaults from the environment)")
    models.add_argument("--ollama-url", dest="ollama_url", metavar="URL", help="Ollama server (OLLAMA_BASE_URL)")
    models.add_argument("--llm-model", dest="llm_model", metavar="NAME", help="Ollama model (OLLAMA_MODEL)")
    models.add_argument("--flux", metavar="ID|DIR|FILE",
                        help="diffusers hub id, local diffusers folder, or a single-file .safetensors transformer "
                             "(FLUX_MODEL)")
    models.add_argument("--flux-base", dest="flux_base", metavar="ID|DIR",
                        help="where a single-file transformer takes the other components from "
                             f"(default: {checks.DEFAULT_FLUX_BASE})")
    models.add_argument("--lora", action="append", metavar="PATH[:WEIGHT[:TRIGGER]]",
                        help="LoRA file, repeatable; replaces FLUX_LORAS when given")
    models.add_argument("--clip", metavar="ID", help="open_clip model: ARCH/TAG, hf-hub:ORG/REPO or "
                                                     "local-dir:PATH (CLIP_MODEL)")
    models.add_argument("--caption-model", dest="caption_model", metavar="NAME",
                        help="Ollama vision model for --captions (e.g. qwen2.5vl:7b, llava)")
    remote.add_arguments(models)
    models.add_argument("--aesthetic", metavar="PATH", help="aesthetic head (.pth/.safetensors), 'laion' or 'v2.5' "
                                                            "(AESTHETIC_MODEL)")
    scorers.add_scorer_flags(models)

    runtime = p.add_argument_group("runtime")
    runtime.add_argument("--device", metavar="DEVICE", help="cuda, cuda:N, mps or cpu (default: best available)")
    runtime.add_argument("--offload", action="store_true", default=None,
                         help="keep Flux's parts in RAM and move each to the GPU only while it runs (less VRAM)")
    runtime.add_argument("--low-vram", dest="low_vram", action="store_true", default=None,
                         help="unload the Ollama model before each round's generation")
    runtime.add_argument("--compile", action="store_true", default=None,
                         help="compile Flux's transformer blocks before round 0 (about 20 s the first time, a few "
                              "seconds with a warm cache; ~20 %% faster images on a GPU)")
    runtime.add_argument("--fp8", action="store_true", default=None,
                         help="with --compile: float8 weights through torchao on GPUs with fp8 (Ada, Hopper or "
                              "newer); faster, and pixels differ slightly from bf16")
    runtime.add_argument("--compile-cache", dest="compile_cache", metavar="DIR",
                         help="where compiled kernels are kept between runs (default: $PROMPTBEAM_COMPILE_CACHE, "
                              "else ~/.cache/promptbeam/compile)")
    workers.add_worker_flags(p)


# ---------------------------------------------------------------------------------------------------------------
# Step 1: parameters


@dataclasses.dataclass
class SearchPlan:
    """Everything the search needs, checked; nothing loaded yet."""
    config: BeamConfig
    user_prompt: str
    out_root: Path
    run_dir: Path
    resume: bool
    settings: dict                    # ollama_url, llm_model, flux, flux_base, loras, clip, aesthetic, device, offload
    overrides: dict                   # --resume: the RESUME_OVERRIDES flags given (e.g. more --iterations)


def plan_search(args: argparse.Namespace, env_settings: Optional[Settings] = None) -> SearchPlan:
    env = env_settings or Settings.from_env()
    given = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name, None) is not None}
    recorded = {}
    if args.resume:
        plan, recorded = _resume_plan(args, given)
    else:
        if not args.prompt or not args.prompt.strip():
            raise InvalidParameter("prompt", "is missing: say what you want to see, e.g. "
                                             "python -m pipeline search \"a lighthouse at dusk\"")
        checks.check_out_dir(args.out, flag="out")
        if getattr(args, "comfy_workers", None):     # the render workflow's own size/steps unless flags say
            given = {**workers.image_defaults(args.render_workflow), **given}
        plan = SearchPlan(config=BeamConfig(**given).validate(), user_prompt=args.prompt.strip(),
                          out_root=Path(args.out), run_dir=Path(args.out) / new_run_id(), resume=False,
                          settings={}, overrides={})
    plan.settings = model_settings(args, recorded, env)
    if plan.config.captions and not plan.settings["caption_model"]:
        raise InvalidParameter("captions", "needs --caption-model NAME, an Ollama vision model (e.g. qwen2.5vl:7b "
                                           "or llava) that describes each image for the critique")
    check_models(plan.settings, lora_flag="FLUX_LORAS" if args.lora is None and "lora" not in recorded else "lora")
    checks.check_true_cfg(plan.settings["true_cfg"], plan.config.use_negative, flag="true_cfg")
    return plan


def _resume_plan(args: argparse.Namespace, given: dict) -> tuple[SearchPlan, dict]:
    """The recorded run with the allowed overrides, and the model choices it recorded."""
    if args.prompt:
        raise InvalidParameter("prompt", "give either PROMPT or --resume RUN_DIR, not both (a resumed run keeps "
                                         "its prompt)")
    fixed = sorted(name for name in given if name not in RESUME_OVERRIDES)
    if fixed:
        changeable = ", ".join(args.flag_names[name] for name in RESUME_OVERRIDES)
        raise InvalidParameter(fixed[0], "cannot be changed when resuming: the run keeps the settings in its "
                                         f"report.json (only {changeable} can change)")
    run_dir = Path(args.resume)
    report = read_report(run_dir)
    config = BeamConfig.from_dict({**(report.get("config") or {}), **given}).validate()
    plan = SearchPlan(config=config, user_prompt=str(report["user_prompt"]), out_root=run_dir.parent,
                      run_dir=run_dir, resume=True, settings={}, overrides=given)
    return plan, recorded_models(report)


def read_report(run_dir: Path) -> dict:
    path = run_dir / "report.json"
    if not run_dir.is_dir():
        raise InvalidParameter("resume", f"{run_dir} is not a folder; give the run directory printed by the "
                                          "interrupted search")
    if not path.is_file():
        raise InvalidParameter("resume", f"{run_dir} has no report.json, so it is not a Prompt Beam run directory")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidParameter("resume", f"{path} cannot be read as JSON ({exc})") from None
    if not isinstance(report, dict) or not str(report.get("user_prompt") or "").strip():
        raise InvalidParameter("resume", f"{path} is not a Prompt Beam report (no user_prompt)")
    if report.get("replay_of"):
        raise InvalidParameter("resume", f"{run_dir} is a replay; replays are not resumed, replay the source again")
    return report


def new_run_id() -> str:
    """Sortable by start time; the random tail keeps two runs started in the same second apart."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


# ---------------------------------------------------------------------------------------------------------------
# Steps 2 and 3: connect, load, run


@contextlib.contextmanager
def log_above(bar):
    """While the progress bar runs, log lines (a report.html that could not be written, ...) go above it, each on a
    line of its own, instead of into the middle of the bar."""
    root = logging.getLogger()
    saved = list(root.handlers)

    class AboveTheBar(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            bar.write(self.format(record), file=sys.stderr)
    moved = []
    for handler in saved:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.stdout):
            above = AboveTheBar(handler.level)
            above.setFormatter(handler.formatter)
            moved.append(above)
        else:
            moved.append(handler)
    root.handlers = moved
    try:
        yield
    finally:
        root.handlers = saved


class StopOnCtrlC:
    """First Ctrl-C: set a flag the search polls (it stops at the next checkpoint, record complete).
    Second Ctrl-C: default SIGINT behaviour, i.e. the process ends at once (report.json is written atomically,
    so at most the candidate in flight is lost)."""

    def __init__(self, announce):
        self.requested = False
        self._announce = announce
        self._previous = None

    def __enter__(self) -> "StopOnCtrlC":
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        # Set the default handler first: the next Ctrl-C is handled by the OS even while Python is busy in C code.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        self._announce("stopping after the current step; the run stays resumable (Ctrl-C again to abort now)")

    def __call__(self) -> bool:
        return self.requested


@dataclasses.dataclass
class Components:
    """What a search runs on, loaded: prompt operations, generator, scorer, and the optional vision critic and
    pairwise judge."""
    ops: object
    generator: object
    scorer: object
    critic: object = None
    judge: object = None

    def search(self, config: BeamConfig, callbacks=None):
        from ..beam.search import BeamSearch

        return BeamSearch(self.ops, self.generator, self.scorer, config, callbacks, critic=self.critic,
                          judge=self.judge)


def run(args: argparse.Namespace) -> int:
    plan = plan_search(args)
    return execute(plan, load_components(plan))


def load_components(plan: SearchPlan) -> Components:
    """The components of a checked plan: backends that answer first, then the models."""
    s = plan.settings
    from ..llm.client import OllamaClient
    from ..llm.operations import PromptEngine

    client = OllamaClient(s["ollama_url"], s["llm_model"])
    # Fail in a second if Ollama is down or a model is not pulled, not after loading Flux.
    for model in filter(None, (s["llm_model"], s["caption_model"], s["critic_model"], s["judge_model"])):
        OllamaClient(s["ollama_url"], model, timeout=30, retries=1).check()
    caption_client = OllamaClient(s["ollama_url"], s["caption_model"]) if s["caption_model"] else None
    critic, judge = vision_judges(s, text_model=client.model, seed=plan.config.seed)
    say(f"Ollama {client.base_url}: model {client.model} ready" +
        (f"; critic {s['critic_model']}" if critic is not None else "") +
        (f"; judge {s['judge_model']}" if judge is not None else ""))

    from ..scoring.scorer import load_scorer

    # Workers and services first: a typo in a URL, or a backend that is down, fails before anything loads.
    generator = workers.connect_pool(s, say) if s["comfy_workers"] else None
    service_generator, scorer = remote.connect({**s, "caption_client": caption_client}, say)
    generator = generator or service_generator
    if scorer is None:
        say(f"loading scorer {s['clip']} + aesthetic {s['aesthetic'] or 'LAION (default)'} ...")
        scorer = load_scorer(clip_model=s["clip"], aesthetic_model=s["aesthetic"], device=s["device"],
                             caption_client=caption_client)
    scorer = scorers.attach(scorer, s, say)
    if generator is None:
        from ..generation.diffusers_flux import DiffusersFluxGenerator

        say(f"loading Flux {s['flux']} ...")
        generator = DiffusersFluxGenerator(s["flux"], loras=s["loras"], device=s["device"], offload=s["offload"],
                                           base=s["flux_base"] or None, true_cfg_scale=s["true_cfg"] or 1.0,
                                           compile=s["compile"], fp8=s["fp8"], compile_cache=s["compile_cache"])
        if s["compile"]:
            say(f"--compile: Flux compiles before round 0 (cache {generator.speed.cache_dir or 'unusable'})")
        if plan.config.use_negative and not (s["true_cfg"] or 1.0) > 1:
            say("note: Flux ignores negative prompts unless --true-cfg is above 1; the LLM still writes them, and "
                "each candidate is marked negative_ignored in report.json and its PNG")
    ops = PromptEngine(client, seed=plan.config.seed, low_vram=plan.config.low_vram)
    if critic is not None and critic.client.model == client.model:
        critic = ops                  # the text model itself looks, inside the children request
    return Components(ops, generator, scorer, critic, judge)


def vision_judges(settings: dict, text_model: str, seed: int) -> tuple:
    """The critic and the judge of --critic-model / --judge-model, each refused (exit 2, naming its flag) unless
    Ollama says the model sees images, and the judge unless it takes two images a request."""
    from ..llm.client import OllamaClient, same_model
    from ..llm.operations import PromptEngine
    from ..llm.vision import PairwiseJudge, require_vision

    def engine(flag: str, images: int):
        client = OllamaClient(settings["ollama_url"], settings[flag])
        require_vision(client, flag, images=images)
        return PromptEngine(client, seed=seed)

    critic = engine("critic_model", 1) if settings["critic_model"] else None
    if critic is not None and same_model(settings["critic_model"], text_model):
        critic.client.model = text_model
        say("note: the critic is the text model: it looks at each parent's image inside the request that writes "
            "the children (one request a parent)")
    judge = PairwiseJudge(engine("judge_model", 2)) if settings["judge_model"] else None
    return critic, judge


def execute(plan: SearchPlan, parts: Components) -> int:
    from tqdm import tqdm

    from ..beam.search import SearchCallbacks

    bar = tqdm(total=None, unit="img", file=sys.stderr, dynamic_ncols=True, desc="search")

    def on_progress(event) -> None:
        if event.images_total and bar.total != event.images_total:
            bar.total = event.images_total
        bar.n = event.images_done
        bar.set_postfix_str(event.text(), refresh=False)
        bar.refresh()

    def on_candidate(candidate, image) -> None:
        if candidate.status == "ok" and candidate.total is not None:
            line = f"  {candidate.id:<7} total {candidate.total:6.2f}  {_shorten(candidate.prompt, 90)}"
        else:
            line = f"  {candidate.id:<7} failed: {_shorten(candidate.error or 'unknown error', 100)}"
        bar.write(line, file=sys.stderr)

    with StopOnCtrlC(lambda text: bar.write(text, file=sys.stderr)) as stop, log_above(bar):
        callbacks = SearchCallbacks(on_progress=on_progress, on_candidate=on_candidate, should_stop=stop)
        search = parts.search(plan.config, callbacks)
        record_cli_settings(search, plan.settings)
        try:
            if plan.resume:
                result = search.resume(plan.run_dir, overrides=plan.overrides or None)
            else:
                result = search.run(plan.user_prompt, plan.out_root, run_id=plan.run_dir.name)
        except Interrupted:
            bar.close()
            print_resume_hint(plan.run_dir)
            return EXIT_INTERRUPTED
        except RecordNotWritable as exc:      # disk full, folder read-only: say so, and how to go on
            bar.close()
            exc.resume_command = RESUME_HINT.format(run_dir=plan.run_dir)
            raise
        except PromptBeamError:
            bar.close()
            if (plan.run_dir / "report.json").is_file():
                say(f"run record: {plan.run_dir}")
            raise
        finally:
            bar.close()
    print_summary(result)
    if result.stop_reason == "interrupted":      # a Ctrl-C that came after the last candidate changed nothing
        print_resume_hint(result.run_dir)
        return EXIT_INTERRUPTED
    return EXIT_OK


def print_summary(result) -> None:
    early = why_it_stopped_early(result.report)
    if early:
        say(f"note: {early}")
    best = result.best
    nan = float("nan")
    scores = best.scores or {}
    print(f"run directory: {result.run_dir}")
    print(f"stop reason:   {result.stop_reason}")
    named = "".join(f"  {name} {value:.3f}" for name, value in scores.items()   # --scorer's own scores
                    if name not in ("alignment", "aesthetic", "total"))
    print(f"best:          {best.id}  total {scores.get('total', nan):.2f}  "
          f"alignment {scores.get('alignment', nan):.2f}  aesthetic {scores.get('aesthetic', nan):.2f}{named}")
    if best.image:
        print(f"image:         {Path(result.run_dir) / best.image}")
    print(f"prompt:        {best.prompt}")
    print(f"report page:   {Path(result.run_dir) / 'report.html'}")
    compile_s = (result.report.get("timings") or {}).get("compile_s")
    if compile_s:
        print(f"compile:       {compile_s:.1f} s warm-up before round 0")
    control = result.control or {}
    if control.get("status") == "done" and control.get("delta_total") is not None:
        print(f"control arm:   best total {control['best_total']:.2f} from seeds only with the same image budget "
              f"(beam {'+' if control['delta_total'] >= 0 else ''}{control['delta_total']:.2f})")
    sys.stdout.flush()


def why_it_stopped_early(report: dict) -> Optional[str]:
    """One line for a search that stopped before its rounds were done for a reason the user can act on."""
    last = report["iterations"][-1] if report["iterations"] else None
    if last is None:
        return None
    if report["stop_reason"] == "exhausted":
        return (f"round {last['iteration'] + 1} brought no new prompt: the LLM wrote only prompts it had written "
                f"before, also when asked again with them listed (stop reason exhausted). Try another or a larger "
                f"model (--llm-model), or --dimension-policy adaptive")
    if report["stop_reason"] == "failures" and last["failed"]:
        first = next(c for c in report["candidates"] if c["id"] == last["failed"][0])
        return (f"{len(last['failed'])} of {len(last['candidates'])} candidates of round {last['iteration'] + 1} "
                f"failed, so the search stopped with the best so far (stop reason failures); the first: "
                f"{' '.join(str(first['error']).split())}")
    return None


def print_resume_hint(run_dir: Path) -> None:
    say(f"interrupted; the run record is complete. Continue it with:\n  {RESUME_HINT.format(run_dir=run_dir)}")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _shorten(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
