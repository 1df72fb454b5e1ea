"""``sluice router``: train a learned router, evaluate routers with k-fold CV, score a prompt."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

router_app = typer.Typer(help="Complexity routing: train and evaluate routers, score prompts.",
                         no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

DataOpt = Annotated[Optional[Path], typer.Option(
    "--data", help="RouteLLM eval folder or labelled .jsonl (default: $SLUICE_ROUTELLM_DATA, "
                   "else ../shared/data/routellm beside the repo).")]
BenchOpt = Annotated[str, typer.Option(
    "--benchmarks", help="Comma-separated subset of gsm8k,mmlu,mt-bench (RouteLLM folder only).")]
DEFAULT_ARTIFACT = Path("ops/router/artifacts/router-tfidf-lr.npz")


def _load(data: Optional[Path], benchmarks: str) -> list[Any]:
    from models.domain.errors import SluiceError
    from ops.router.datasets import load_dataset

    try:
        return load_dataset(data, [b.strip() for b in benchmarks.split(",") if b.strip()])
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None


def _embedder() -> Any:
    from ops.router.embed_cache import CachedEmbedder
    from scheduler.router.embedder import Embedder

    return CachedEmbedder(Embedder())


@router_app.command()
def train(
    data: DataOpt = None,
    benchmarks: BenchOpt = "gsm8k,mmlu,mt-bench",
    kind: Annotated[str, typer.Option(
        help="tfidf-lr, embed-lr, embed+tfidf-lr or tfidf-embed-blend (the MiniLM weight "
             "chosen by inner CV on the training prompts).")] = "tfidf-lr",
    out: Annotated[Path, typer.Option(help="Artifact path (.npz; a .json of metadata beside).")]
    = DEFAULT_ARTIFACT,
    c: Annotated[float, typer.Option("--c", help="Inverse regularisation strength.")] = 0.5,
    folds: Annotated[int, typer.Option(help="Folds of the CV whose metrics go into the artifact "
                                            "(0 skips it).")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON.")] = False,
    task_types: Annotated[Optional[Path], typer.Option(
        "--task-types", help="Train a task-type classifier instead, on JSON Lines of "
                             "{\"prompt\", \"task_type\"} (give --out; name the artifact "
                             "as a ladder's classifier).")] = None,
    from_ledger: Annotated[bool, typer.Option(
        "--from-ledger", help="Train on the judged pairs (and feedback) of --feature, from the "
                              "ledger (their features must keep text).")] = False,
    features: Annotated[Optional[list[str]], typer.Option(
        "--feature", help="Feature whose traffic to learn from (repeatable).")] = None,
    orgs: Annotated[Optional[list[str]], typer.Option(
        "--org", help="--from-ledger: only this org's traffic of --feature (repeatable; "
                      "default: every org's).")] = None,
    url: Annotated[Optional[str], typer.Option(help="Ledger database URL (default: settings).")]
    = None,
    current: Annotated[Optional[Path], typer.Option(
        help="--from-ledger: the artifact to beat (default: the shipped one).")] = None,
    target: Annotated[float, typer.Option(
        help="--from-ledger: the quality target, a share of all-flagship quality.")] = 0.95,
    report_dir: Annotated[Path, typer.Option(
        "--report", help="--from-ledger: folder for router_eval.png/.json/.md, the same "
                         "report as `sluice router eval`.")] = Path(".sluice/router-eval-ledger"),
) -> None:
    """Fit a learned router on all the data and save it as a versioned artifact.

    With ``--from-ledger`` the artifact is written only when its out-of-fold strong share at
    ``--target`` beats the current artifact's on the same prompts (exit 1 otherwise).
    """
    from models.domain.errors import SluiceError

    if task_types is not None:
        _train_task_types(task_types, out, c, as_json)
        return
    from ops.router import metrics as M
    from ops.router.evaluation import out_of_fold_scores
    from ops.router.training import TrainConfig, fit_router

    if from_ledger:
        examples = _ledger(features, url, orgs)
        folds = max(folds, 2)
    else:
        examples = _load(data, benchmarks)
    try:
        config = TrainConfig(kind=kind, c=c)
        metrics: dict[str, Any] = {}
        started = time.perf_counter()
        emb = _embedder() if config.uses_embeddings else None
        if folds:
            scores = out_of_fold_scores(examples, kind, folds=folds, config=config,
                                        embedder=(lambda: emb) if emb else None)
            curve = M.quality_curve(scores, [e.weak for e in examples],
                                    [e.strong for e in examples])
            metrics = {"cv_folds": folds, "dataset": benchmarks, **M.summarize(curve)}
        promotion = None
        if from_ledger:
            promotion, current_scores = _versus_current(examples, scores,
                                                        current or DEFAULT_ARTIFACT, target)
            metrics["promotion"] = promotion.as_json()
            written = _ledger_report(examples, {kind: scores, "current": current_scores},
                                     report_dir, folds, features or [], promotion)
            err_console.print(f"report: {written}")
            if not promotion.promote:
                err_console.print(f"not promoted: out-of-fold strong share "
                                  f"{promotion.as_json()['candidate_strong_share']} does not "
                                  f"beat the current router's "
                                  f"{promotion.as_json()['current_strong_share']} at "
                                  f"{target:.0%} quality on {len(examples)} judged prompts")
                if as_json:
                    console.print_json(json.dumps(metrics, default=str))
                raise typer.Exit(1)
        artifact = fit_router(examples, config, embedder=emb, metrics=metrics)
        artifact.meta["training"]["seconds"] = round(time.perf_counter() - started, 1)
        path = artifact.save(out)
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None
    if as_json:
        console.print_json(json.dumps(artifact.meta, default=str))
        return
    size = path.stat().st_size / 1e6
    console.print(f"saved [bold]{path}[/] ({size:.2f} MB), version {artifact.version}, "
                  f"{len(examples)} prompts, {artifact.meta['training']['seconds']} s")
    if metrics:
        console.print(f"{folds}-fold CV: APGR {metrics['apgr']:.3f}, CPT(50%) "
                      f"{100 * metrics['cpt50']:.1f}%, CPT(80%) {100 * metrics['cpt80']:.1f}%")


def _ledger(features: Optional[list[str]], url: Optional[str],
            orgs: Optional[list[str]] = None) -> list[Any]:
    from models.db.engine import make_engine, session_factory
    from models.domain.settings import load_settings
    from ops.router.from_ledger import ledger_examples

    if not features:
        err_console.print("[red]--from-ledger needs --feature F (repeatable)[/]")
        raise typer.Exit(2)
    engine = make_engine(url or load_settings().database.url)
    try:
        with session_factory(engine)() as s:
            examples = ledger_examples(s, features, orgs=orgs)
    finally:
        engine.dispose()
    labels = {e.cheap_suffices for e in examples}
    if len(examples) < 10 or len(labels) < 2:
        err_console.print(f"[red]{len(examples)} judged prompts with kept text for "
                          f"{', '.join(features)}: too few, or all of one verdict; shadow more "
                          "of their traffic (SLUICE_QUALITY__FEATURES) and keep its text "
                          "(SLUICE_PRIVACY__STORE_TEXT_FEATURES)[/]")
        raise typer.Exit(2)
    return examples


def _versus_current(examples: list[Any], oof: Any, current: Path, target: float) -> Any:
    from ops.router.from_ledger import compare
    from scheduler.router.base import RouteInput
    from scheduler.router.registry import build_router

    router = build_router("learned", str(current))
    scores = router.score_inputs([RouteInput(e.prompt, e.history_turns) for e in examples])
    return compare(examples, oof, scores, target), scores


def _ledger_report(examples: list[Any], scores: dict[str, Any], out: Path, folds: int,
                   features: list[str], promotion: Any) -> Path:
    """The `sluice router eval` report (plot, JSON, Markdown) of the ledger-trained candidate
    (out of fold), the current artifact and the oracle, on the judged prompts."""
    from ops.router import report
    from ops.router.evaluation import results_for

    results = results_for(examples, scores, dataset="ledger:" + ",".join(features))
    meta = {"command": " ".join(["sluice", "router", "train", *sys.argv[3:]]),
            "folds": folds, "features": features, "prompts": len(examples),
            "promotion": promotion.as_json()}
    report.plot(results, out / "router_eval.png")
    report.write_json(results, out / "router_eval.json", meta)
    (out / "router_eval.md").write_text(report.markdown(results, published=False) + "\n")
    return out


@router_app.command(name="eval")
def eval_(
    data: DataOpt = None,
    benchmarks: BenchOpt = "gsm8k,mmlu,mt-bench",
    routers: Annotated[list[str], typer.Option(
        "--router", "-r", help="Router to evaluate (repeatable): heuristic, random, learned, "
                               "tfidf-lr, embed-lr, embed+tfidf-lr, tfidf-embed-blend.")]
    = ["heuristic", "random", "learned"],
    folds: Annotated[int, typer.Option(help="Cross-validation folds for learned routers.")] = 5,
    seed: Annotated[int, typer.Option(help="Seeds the folds and the random router.")] = 0,
    combined: Annotated[bool, typer.Option(help="Also evaluate all benchmarks together.")] = True,
    out: Annotated[Path, typer.Option(help="Folder for router_eval.png/.json/.md.")]
    = Path(".sluice/router-eval"),
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    scores_out: Annotated[Optional[Path], typer.Option(
        "--scores-out", help="Write every prompt's out-of-fold score here (JSON lines).")]
    = None,
) -> None:
    """Quality against strong-call share, APGR, CPT(50/80%) and the share for 95 % of strong."""
    from models.domain.errors import SluiceError
    from ops.router import report
    from ops.router.evaluation import evaluate

    examples = _load(data, benchmarks)
    say = (lambda msg: err_console.print(f"[dim]… {msg}[/]")) if not as_json else None
    try:
        started = time.perf_counter()
        results = evaluate(examples, routers, folds=folds, seed=seed, combined=combined,
                           embedder=_embedder, progress=say)
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None
    meta = {"command": " ".join(["sluice", "router", "eval", *sys.argv[3:]]),
            "folds": folds, "seed": seed, "benchmarks": benchmarks, "prompts": len(examples),
            "seconds": round(time.perf_counter() - started, 1)}
    png = report.plot(results, out / "router_eval.png")
    js = report.write_json(results, out / "router_eval.json", meta)
    (out / "router_eval.md").write_text(report.markdown(results) + "\n")
    if scores_out is not None:
        from ops.router.evaluation import write_scores

        written = write_scores(results, scores_out)
        if not as_json:
            console.print(f"scores: {scores_out} ({written} lines)")
    if as_json:
        console.print_json(js.read_text())
        return
    console.print(report.rich_table(results))
    console.print(f"plot: {png}  json: {js}  ({meta['seconds']} s)")


@router_app.command()
def score(
    prompt: Annotated[str, typer.Argument(help="Prompt text, or - for stdin.")],
    router: Annotated[str, typer.Option(help="heuristic, learned or random.")] = "heuristic",
    artifact: Annotated[Optional[Path], typer.Option(help="Artifact for --router learned.")]
    = None,
    threshold: Annotated[float, typer.Option(help="Policy threshold for the tier shown.")] = 0.5,
) -> None:
    """Score one prompt and show the tier a default policy would pick."""
    from models.domain.errors import SluiceError
    from scheduler.router.policy import RoutingPolicy
    from scheduler.router.registry import build_router

    text = sys.stdin.read() if prompt == "-" else prompt
    try:
        chosen = build_router(router, str(artifact) if artifact else None)
        decision = RoutingPolicy(threshold=threshold).decide(chosen.score_text(text), chosen.label)
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None
    console.print_json(json.dumps(decision.to_record()))


def _train_task_types(data: Path, out: Path, c: float, as_json: bool) -> None:
    """Fit the task-type classifier a ladder names (scheduler/router/task_classifier.py)."""
    from models.domain.errors import SluiceError
    from scheduler.router.task_classifier import load_examples, train

    if out == DEFAULT_ARTIFACT:
        err_console.print("[red]give --out PATH for the task-type classifier[/] (the shipped "
                          "router artifact is not overwritten)")
        raise typer.Exit(2)
    try:
        prompts, labels = load_examples(data)
        clf = train(prompts, labels, c=c if c != 1.0 else 4.0)
        hits = sum(p == y for (p, _), y in zip(clf.predict(prompts), labels))
        clf.meta["train_accuracy"] = round(hits / len(labels), 4)
        path = clf.save(out)
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None
    if as_json:
        console.print_json(json.dumps(dict(clf.meta, classes=list(clf.classes),
                                           version=clf.version, path=str(path)), default=str))
        return
    console.print(f"saved [bold]{path}[/], version {clf.version}, {len(prompts)} prompts, "
                  f"task types {', '.join(clf.classes)}, training accuracy "
                  f"{100 * clf.meta['train_accuracy']:.1f}%")
