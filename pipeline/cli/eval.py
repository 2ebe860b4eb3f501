"""`python -m pipeline eval (--prompts FILE | --set NAME) --judge SPEC… [search flags] [--out DIR] [--resume DIR]`:
does the beam search beat trying more seeds, on these prompts, by judges it did not optimise?

Each prompt runs the beam search (every search flag applies) with its equal-budget seed-only control arm; the two
winners go to the judges; eval.json and eval.html land in a new folder under --out (default ./evals), rewritten
after every prompt. Order of work, as for `search`: every parameter checked (prompts, judges, the search flags and
their models) -> exit 2 naming the flag; Ollama and the services asked -> exit 1; then the models load once and
the prompts run under one progress bar. Ctrl-C stops at the next checkpoint (exit 130) and prints the --resume
command; a resumed eval keeps its recorded prompts, judges, settings and models.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from pathlib import Path
from typing import Optional

from .. import __version__
from ..beam.config import BeamConfig
from ..config import Settings
from ..errors import Interrupted, InvalidParameter
from . import search
from .exit_codes import EXIT_INTERRUPTED, EXIT_OK
from .models import check_models, model_settings, record_cli_settings, recorded_models

RESUME_HINT = "python -m pipeline eval --resume {eval_dir}"
NOT_FLAGS = {"resume", "out", "debug", "handler", "flag_names", "command"}
# Where and how fast it runs, not what it measures.
CHANGEABLE_ON_RESUME = {"device", "offload", "compile", "compile_cache"}


def add_parser(commands, parents) -> argparse.ArgumentParser:
    from ..evaluation.prompt_sets import set_names

    p = commands.add_parser(
        "eval", parents=parents, help="beam search vs seeds only at the same image budget, judged by held-out judges",
        description="Runs each prompt through the beam search and its equal-budget seed-only control arm, judges "
                    "the two winners with judges the search did not optimise, and writes eval.json and eval.html.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--prompts", metavar="FILE", help="one prompt a line, optionally CATEGORY<TAB>PROMPT")
    source.add_argument("--set", dest="prompt_set", metavar="NAME",
                        help=f"a prompt set shipped with the pack: {', '.join(set_names())}")
    p.add_argument("--limit", type=int, metavar="N", help="only N prompts, spread over the categories")
    p.add_argument("--judge", action="append", metavar="SPEC",
                   help="repeatable: a held-out scorer (hpsv2[=FILE], pickscore[=SOURCE], clip) or vlm:MODEL; never "
                        "one the search optimises (--scorer)")
    p.add_argument("--out", metavar="DIR", default="evals", help="root folder of eval folders (default: ./evals)")
    p.add_argument("--resume", metavar="EVAL_DIR", help="continue an interrupted eval from its eval.json")
    search.add_search_flags(p)
    return p


@dataclasses.dataclass
class EvalPlan:
    """Everything the eval needs, checked; nothing loaded yet."""
    search: search.SearchPlan          # the config (control arm on) and the model settings every prompt shares
    judges: tuple                      # evaluation.judges.JudgeSpec
    record: object                     # the resumed EvalRecord, or None for a new eval (see `new`)
    new: dict                          # a new eval's {out_root, settings, items}, written once the models answer


def plan_eval(args: argparse.Namespace, env: Optional[Settings] = None) -> EvalPlan:
    from ..evaluation.judges import parse_judge_specs
    from ..evaluation.prompt_sets import fingerprint, load_prompt_file, load_set, spread_limit

    env = env or Settings.from_env()
    if args.resume:
        return _resume_plan(args, env)
    if args.prompts:
        items, source = load_prompt_file(args.prompts, flag="prompts"), f"file:{Path(args.prompts).resolve()}"
    elif args.prompt_set:
        items, source = load_set(args.prompt_set, flag="prompt_set"), f"set:{args.prompt_set.strip()}"
    else:
        raise InvalidParameter("prompts", "is missing: give --prompts FILE (one prompt a line) or --set NAME")
    items = spread_limit(items, args.limit, flag="limit")
    if args.score_text is not None:
        raise InvalidParameter("score_text", "does not apply to eval: each prompt is scored, and judged, against itself")
    judges = parse_judge_specs(args.judge, flag="judge")
    # The search's own checks on a stand-in prompt, with the control arm on: the same verdicts as `search`.
    search_args = argparse.Namespace(**{**vars(args), "prompt": items[0].prompt, "resume": None, "control_arm": True,
                                        "hps_judge": any(j.name == "hpsv2" for j in judges)})
    plan = search.plan_search(search_args, env)
    _check_eval(plan, judges)
    settings = {"prompts": {"source": source, "limit": args.limit, "count": len(items),
                            "sha256": fingerprint(items)},
                "search": plan.config.to_dict(), "scorers": plan.settings["scorers"],
                "hps_arch": plan.settings["hps_arch"], "cli": _cli_settings(plan.settings),
                "judge_specs": [str(j) for j in judges],
                "flags": {k: v for k, v in vars(args).items() if k not in NOT_FLAGS and v is not None},
                "bootstrap": {"resamples": 2000, "seed": 0, "confidence": 0.95},
                "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "version": __version__}
    return EvalPlan(plan, judges, None, {"out_root": Path(args.out), "settings": settings, "items": items})


def _check_eval(plan: search.SearchPlan, judges) -> None:
    from ..evaluation.judges import check_held_out
    from ..scoring.sources import resolve_scorer

    if plan.config.iterations < 2:
        raise InvalidParameter("iterations", "must be >= 2 for eval: the control arm gets the images the beam renders "
                                             "after round 0, and with one round there are none")
    check_held_out(judges, plan.settings, flag="judge")
    for judge in judges:
        if judge.kind == "scorer" and judge.name != "clip":
            resolve_scorer(judge.scorer, hps_arch=plan.settings["hps_arch"]).raise_if_invalid("judge")


def _cli_settings(settings: dict) -> dict:
    holder = argparse.Namespace(extra_config={})
    record_cli_settings(holder, settings)
    return holder.extra_config["cli"]


def _resume_plan(args: argparse.Namespace, env: Settings) -> EvalPlan:
    from ..evaluation.judges import parse_judge_specs
    from ..evaluation.record import EvalRecord

    given = sorted(k for k, v in vars(args).items() if k not in NOT_FLAGS | CHANGEABLE_ON_RESUME and v is not None)
    if given:
        raise InvalidParameter(given[0], "cannot be changed when resuming: the eval keeps the prompts, judges and "
                                         "settings in its eval.json (only --device, --offload, --compile and "
                                         "--compile-cache can change)")
    record = EvalRecord.open(args.resume, flag="resume")
    saved = record.data["settings"]
    judges = parse_judge_specs(saved.get("judge_specs"), flag="judge")
    # The scorers come back with the recorded models below (as for `search --resume`), not as flags.
    flags = {**{k: v for k, v in saved.get("flags", {}).items() if k not in ("scorer", "hps_arch")},
             **{k: getattr(args, k) for k in CHANGEABLE_ON_RESUME if getattr(args, k) is not None}}
    search_args = argparse.Namespace(**{**vars(args), **flags, "resume": None, "prompt": None,
                                        "hps_judge": any(j.name == "hpsv2" for j in judges)})
    config = BeamConfig.from_dict(saved["search"]).validate()
    # The models the eval started with, whatever the environment says now (as `search --resume` does).
    settings = model_settings(search_args, recorded_models({"config": {"cli": saved.get("cli") or {}}}), env)
    lora_flag = "lora" if flags.get("lora") is not None or (saved.get("cli") or {}).get("loras") else "FLUX_LORAS"
    check_models(settings, lora_flag=lora_flag)
    plan = search.SearchPlan(config=config, user_prompt="", out_root=record.runs_dir, run_dir=record.runs_dir,
                             resume=True, settings=settings, overrides={})
    return EvalPlan(plan, judges, record, {})


# ---------------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    plan = plan_eval(args)
    from ..evaluation.judges import build_judges, connect_vision_judges
    from ..evaluation.record import EvalRecord

    # The vision judges' models are asked first: one that cannot see two images fails before Flux loads.
    vision = connect_vision_judges(plan.judges, plan.search.settings)
    parts = search.load_components(plan.search)
    judges = build_judges(plan.judges, plan.search.settings, plan.search.config.alpha, clip_scorer=parts.scorer,
                          say=search.say, vision=vision)
    record = plan.record
    if record is None:      # written only now: a backend that does not answer leaves no empty eval folder behind
        record = EvalRecord.create(plan.new["out_root"], plan.new["settings"], [j.describe() for j in judges],
                                   plan.new["items"])
    return execute(record, plan.search, parts, judges)


def execute(record, plan: search.SearchPlan, parts: search.Components, judges) -> int:
    from tqdm import tqdm

    from ..beam.search import SearchCallbacks
    from ..evaluation.runner import Evaluation

    total = len(record.data["plan"])
    bar = tqdm(total=total, initial=len(record.judged()), unit="prompt", file=sys.stderr, dynamic_ncols=True,
               desc="eval")
    search.say(f"eval folder: {record.eval_dir}")

    def on_progress(event) -> None:
        bar.set_postfix_str(f"{_tally(record)} · {event.text()}", refresh=True)

    def on_prompt(index: int, entry: Optional[dict]) -> None:
        outcome = entry["verdict"] if entry else "failed"
        bar.write(f"  #{index + 1:<3} {outcome:<8} {search._shorten(record.data['plan'][index]['prompt'], 90)}",
                  file=sys.stderr)
        bar.update(1)
        bar.set_postfix_str(_tally(record), refresh=True)

    with search.StopOnCtrlC(lambda text: bar.write(text, file=sys.stderr)) as stop:
        callbacks = SearchCallbacks(on_progress=on_progress, should_stop=stop)

        def make_search():
            beam = parts.search(plan.config, callbacks)
            record_cli_settings(beam, plan.settings)
            return beam

        try:
            Evaluation(record, make_search, judges, on_prompt=on_prompt, should_stop=stop).run()
        except Interrupted:
            bar.close()
            search.say(f"interrupted; the eval keeps every judged prompt. Continue it with:\n  "
                       f"{RESUME_HINT.format(eval_dir=record.eval_dir)}")
            return EXIT_INTERRUPTED
        finally:
            bar.close()
    print_summary(record)
    return EXIT_OK


def _tally(record) -> str:
    summary = record.data.get("summary") or {}
    return f"beam {summary.get('beam_wins', 0)} · control {summary.get('control_wins', 0)} · tie {summary.get('ties', 0)}"


def print_summary(record) -> None:
    summary = record.data["summary"]

    def pct(value) -> str:
        return "–" if value is None else f"{100 * value:.0f} %"

    ci = summary.get("ci95")
    print(f"eval folder:   {record.eval_dir}")
    print(f"win rate:      {pct(summary['win_rate'])} (95 % interval {pct(ci[0]) if ci else '–'} to "
          f"{pct(ci[1]) if ci else '–'}) over {summary['n']} prompts: beam {summary['beam_wins']}, control "
          f"{summary['control_wins']}, ties {summary['ties']}")
    for name, tally in summary["per_judge"].items():
        gain = summary["mean_gain"].get(name)
        print(f"judge {name + ':':<8} beam {tally['beam_wins']}, control {tally['control_wins']}, ties "
              f"{tally['ties']}; mean gain {'–' if gain is None else f'{gain:+.4f}'}")
    if record.data.get("failed"):
        print(f"failed:        {len(record.data['failed'])} prompts (see eval.json; --resume tries them again)")
    print(f"page:          {record.eval_dir / 'eval.html'}")
    sys.stdout.flush()
