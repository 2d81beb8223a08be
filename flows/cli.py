"""`alignflow run`, `sweep`, `translate`, `evaluate`, `deploy` and `gc`. User errors print one line and exit 2."""

import argparse
import logging
import os
import sys
import textwrap
from pathlib import Path

from data_prep.errors import AlignflowError


class _HideUserErrorTracebacks(logging.Filter):
    """Prefect logs task failures with a traceback; for bad input the one-line message is the whole story."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AlignflowError):
            record.exc_info, record.exc_text = None, None
        return True


def _run(args: argparse.Namespace) -> int:
    from data_prep.sources import resolve_source
    from flows.config import load_config

    config = load_config(args.config, args.set)  # validate before anything starts
    resolve_source(config.data)  # a missing directory, split or language fails here, in a second
    from flows.pipeline import train_pipeline
    from flows.preflight import check_cluster, check_servers, start_ephemeral_prefect

    check_servers(config)  # a server named in the config or environment that does not answer: one line each
    check_cluster(config)  # a job the Ray cluster can never hold fails now, not after waiting for ever
    start_ephemeral_prefect()
    for handler in logging.getLogger().handlers:  # Prefect's console handler sits on the root logger
        handler.addFilter(_HideUserErrorTracebacks())
    train_pipeline(config)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from data_prep.sources import resolve_source
    from flows.config import load_config

    config = load_config(args.config, args.set)  # the space is checked here, before anything starts
    if config.sweep is None:
        raise AlignflowError(f"{args.config or 'config'}: no sweep section to run (see configs/sweep-dates.yaml)")
    resolve_source(config.data)
    from flows.preflight import check_servers, start_ephemeral_prefect
    from flows.sweep import check_sweep, sweep_pipeline
    from training.trainer import connect, local_node, ray_address

    check_servers(config)
    if ray_address(config.scaling) == "local":
        check_sweep(config, local_node())  # trials the new local cluster could never hold fail now
    else:
        import ray

        connect(config.scaling)
        check_sweep(config, {k: float(v) for k, v in ray.cluster_resources().items()})
    start_ephemeral_prefect()
    for handler in logging.getLogger().handlers:
        handler.addFilter(_HideUserErrorTracebacks())
    sweep_pipeline(config)
    return 0


def _translate(args: argparse.Namespace) -> int:
    import mlflow

    from training.tracking import resolve_tracking_uri

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # stdout/stderr carry translations and errors only
    _warnings_to_stderr()
    mlflow.set_tracking_uri(resolve_tracking_uri(None))
    overrides = _decoding_overrides(args)
    if args.batch_size is not None and args.batch_size < 1:
        raise AlignflowError(f"--batch-size {args.batch_size}: must be at least 1")
    # Every line counts, blank or not: output line i is the translation of input line i.
    texts = args.text or [line.rstrip("\r\n") for line in sys.stdin]
    try:
        model = mlflow.pyfunc.load_model(args.model)
    except mlflow.exceptions.MlflowException as e:
        raise AlignflowError(f"--model {args.model}: {str(e).splitlines()[0]}") from None
    # Only what was asked for: every other setting is the model's own (those its test scores were decoded with).
    params = {k: v for k, v in {**overrides, "batch_size": args.batch_size}.items() if v is not None}
    for out in model.predict(texts, params=params):
        print(out.replace("\n", " "))  # one line per input, whatever a tokenizer decodes
    return 0


def _decoding_overrides(args: argparse.Namespace) -> dict[str, float | None]:
    """--beam, --length-penalty, --max-output-ratio as predict params (None: the model's own setting)."""
    given = {"beam_size": ("--beam", args.beam, 1), "length_penalty": ("--length-penalty", args.length_penalty, 0),
             "max_output_ratio": ("--max-output-ratio", args.max_output_ratio, 0.01)}
    for flag, value, low in given.values():
        if value is not None and value < low:
            raise AlignflowError(f"{flag} {value}: must be at least {low}")
    return {k: value for k, (_, value, _) in given.items()}


def _warnings_to_stderr() -> None:
    """The model's warnings (a line cut to the longest source it was trained on) as `alignflow: warning: ...`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("alignflow: warning: %(message)s"))
    logger = logging.getLogger("training")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)


def _evaluate(args: argparse.Namespace) -> int:
    import datasets
    import mlflow

    from data_prep.prepare import prepare
    from flows.config import load_config
    from training import evaluate
    from training.tracking import resolve_tracking_uri

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    datasets.disable_progress_bars()
    _warnings_to_stderr()
    uri = resolve_tracking_uri(None)
    mlflow.set_tracking_uri(uri)
    try:
        version = evaluate.model_version(mlflow.MlflowClient(uri), args.model)
        # Default corpus: the one the version was trained on, as its run recorded the config.
        trained_on = None if args.config else mlflow.artifacts.load_dict(f"runs:/{version.run_id}/config.json")
    except mlflow.exceptions.MlflowException as e:
        raise AlignflowError(f"--model {args.model}: {str(e).splitlines()[0]}") from None
    config = load_config(args.config, args.set, base=trained_on)
    test = evaluate.eval_set(prepare(config.data, config.tokenizer, Path(config.work_dir) / "prepared"), args.split)
    result = evaluate.evaluate_model(f"models:/{version.name}/{version.version}", test, _decoding_overrides(args))
    if args.output:
        Path(args.output).write_text("".join(f"{h}\n" for h in result.hypotheses), encoding="utf-8")
    run_id = evaluate.record(uri, version, result, config.data.source)
    print(f"models:/{version.name}/{version.version} on {test.name} ({len(test.sources)} sentences), "
          f"{evaluate.settings_tag(result.decoding)}")
    for label, key in (("BLEU", "bleu"), ("BLEU -lc", "bleu_lc"), ("chrF", "chrf")):
        print(f"{label:<12}{result.scores[key]:6.2f}  {result.signatures[f'{key}_signature']}")
    print(f"{'exact match':<12}{result.scores['exact_match']:6.2f}")
    print(f"recorded as MLflow run {run_id}, nested under training run {version.run_id}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from flows.deploy import serve

    serve(args.name, args.config, args.set, cron=args.cron, interval=args.interval, limit=args.limit)
    return 0


def _gc(args: argparse.Namespace) -> int:
    from flows.config import load_config
    from flows.gc import collect
    from flows.preflight import check_tracking

    config = load_config(args.config, args.set)
    check_tracking(config)
    collect(config, args.older_than, dry_run=args.dry_run)
    return 0


def _version() -> str:
    from importlib.metadata import version

    return f"alignflow {version('alignflow')}"


def _subcommand(sub: argparse._SubParsersAction, name: str, help: str, example: str,
                details: str | None = None) -> argparse.ArgumentParser:
    """A command whose --help ends with a one-line example; `details` follow the one-line help."""
    description = f"{help}\n\n{textwrap.fill(details, 100)}" if details else help
    return sub.add_parser(name, help=help, description=description,
                          epilog=f"example: {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alignflow",
                                description="Train attention seq2seq models: Prefect flow, Ray Train, MLflow.",
                                epilog="example: alignflow run --config configs/default.yaml   (see COMMAND --help)",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)
    run = _subcommand(sub, "run", "prepare data, train on Ray, evaluate and register (a Prefect flow)",
                      "alignflow run --config configs/default.yaml --set train.epochs=2")
    run.add_argument("--config", help="YAML config (see configs/default.yaml)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    run.set_defaults(func=_run)
    sw = _subcommand(sub, "sweep", "search settings with Ray Tune: each trial a training run, the best one registered",
                     "alignflow sweep --config configs/sweep-dates.yaml",
                     "Runs the config's sweep section: trials sampled from its space train as `run` does, each into "
                     "an MLflow child run of the sweep's parent run; ASHA stops poor trials early; the best trial is "
                     "tested and registered through the champion gate.")
    sw.add_argument("--config", help="YAML config with a sweep section (see configs/sweep-dates.yaml)")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set sweep.num_trials=8 (repeatable)")
    sw.set_defaults(func=_sweep)
    tr = _subcommand(sub, "translate", "translate text with a registered model",
                     'alignflow translate --model models:/alignflow-dates@champion "the 3rd of March 1998"',
                     "One output line per input line, in order; a blank line gives a blank line. A line longer than "
                     "the longest source the model was trained on (data.max_len tokens) is cut to that many tokens, "
                     "with a warning naming the line.")
    tr.add_argument("--model", required=True, help="models:/NAME/VERSION or models:/NAME@ALIAS")
    tr.add_argument("--beam", type=int, help="beam size (1 = greedy); default: the model's, as it was scored")
    tr.add_argument("--length-penalty", type=float, help="beam search length penalty alpha; default: the model's")
    tr.add_argument("--max-output-ratio", type=float, help="decode at most ratio * source length + 5 tokens")
    tr.add_argument("--batch-size", type=int, help="sentences decoded together (default 64)")
    tr.add_argument("text", nargs="*", help="sentences; read from stdin (one per line) when none are given")
    tr.set_defaults(func=_translate)
    ev = _subcommand(sub, "evaluate", "score a registered model on a corpus split with sacrebleu, recorded in MLflow",
                     "alignflow evaluate --model models:/alignflow-dates/1 --beam 5",
                     "Decodes a split (default: the test split of the corpus the model was trained on) with the "
                     "model's own settings, those its test scores were decoded with, unless --beam, "
                     "--length-penalty or --max-output-ratio are given. Prints BLEU, BLEU -lc, chrF and exact "
                     "match with sacrebleu's signatures, and records the evaluation as an MLflow run nested under "
                     "the run that trained the model.")
    ev.add_argument("--model", required=True, help="models:/NAME/VERSION or models:/NAME@ALIAS")
    ev.add_argument("--config", help="YAML config naming the corpus; default: the one the model was trained on")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of that config, e.g. --set data.splits.test=test_2017_flickr (repeatable)")
    ev.add_argument("--split", default="test", help="train, validation or test (default)")
    ev.add_argument("--beam", type=int, help="beam size (1 = greedy); default: the model's")
    ev.add_argument("--length-penalty", type=float, help="beam search length penalty alpha; default: the model's")
    ev.add_argument("--max-output-ratio", type=float, help="decode at most ratio * source length + 5 tokens")
    ev.add_argument("--output", metavar="FILE", help="write the translations here, one per line")
    ev.set_defaults(func=_evaluate)
    dep = _subcommand(sub, "deploy", "serve train-pipeline on a schedule (needs a Prefect server: PREFECT_API_URL)",
                      "alignflow deploy --name nightly --config configs/default.yaml --cron '0 2 * * *'")
    dep.add_argument("--name", required=True, help="deployment name (train-pipeline/NAME)")
    dep.add_argument("--config", required=True, help="YAML config the scheduled runs use")
    dep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    when = dep.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="cron schedule, e.g. '0 3 * * *'")
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every SECONDS")
    dep.add_argument("--limit", type=int, default=1, help="most flow runs at once (default 1)")
    dep.set_defaults(func=_deploy)
    gc = _subcommand(sub, "gc", "delete Ray checkpoints of completed runs and prepared corpora no run needs",
                     "alignflow gc --config configs/default.yaml --dry-run",
                     "Keeps what a run that can be resumed needs, directories whose run the tracking store does not "
                     "know, and anything newer than --older-than days; never touches the MLflow store.")
    gc.add_argument("--config", help="YAML config whose work_dir, scaling.storage_path and tracking.uri to clean")
    gc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    gc.add_argument("--older-than", type=float, default=7.0, metavar="DAYS",
                    help="only what was last written or used more than DAYS ago (default 7)")
    gc.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    gc.set_defaults(func=_gc)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The ephemeral API server gets 20 s to start by default; a busy machine needs longer.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except AlignflowError as e:
        for line in str(e).splitlines() or [""]:  # some errors list several problems, one line each
            print(f"alignflow: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
