"""`alignflow run`, `translate` and `deploy`. User errors print one line and exit 2, never a traceback."""

import argparse
import logging
import os
import sys
import textwrap

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

    for handler in logging.getLogger().handlers:  # Prefect's console handler sits on the root logger
        handler.addFilter(_HideUserErrorTracebacks())
    train_pipeline(config)
    return 0


def _translate(args: argparse.Namespace) -> int:
    import mlflow

    from training.tracking import resolve_tracking_uri

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # stdout/stderr carry translations and errors only
    _warnings_to_stderr()
    mlflow.set_tracking_uri(resolve_tracking_uri(None))
    for flag, value, low in (("--beam", args.beam, 1), ("--length-penalty", args.length_penalty, 0),
                             ("--batch-size", args.batch_size, 1)):
        if value is not None and value < low:
            raise AlignflowError(f"{flag} {value}: must be at least {low}")
    # Every line counts, blank or not: output line i is the translation of input line i.
    texts = args.text or [line.rstrip("\r\n") for line in sys.stdin]
    try:
        model = mlflow.pyfunc.load_model(args.model)
    except mlflow.exceptions.MlflowException as e:
        raise AlignflowError(f"--model {args.model}: {str(e).splitlines()[0]}") from None
    # Only what was asked for: every other setting is the model's own (those its test scores were decoded with).
    params = {k: v for k, v in (("beam_size", args.beam), ("length_penalty", args.length_penalty),
                                ("batch_size", args.batch_size)) if v is not None}
    for out in model.predict(texts, params=params):
        print(out.replace("\n", " "))  # one line per input, whatever a tokenizer decodes
    return 0


def _warnings_to_stderr() -> None:
    """The model's warnings (a line cut to the longest source it was trained on) as `alignflow: warning: ...`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("alignflow: warning: %(message)s"))
    logger = logging.getLogger("training")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)


def _deploy(args: argparse.Namespace) -> int:
    from flows.deploy import serve

    serve(args.name, args.config, args.set, cron=args.cron, interval=args.interval, limit=args.limit)
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
    tr = _subcommand(sub, "translate", "translate text with a registered model",
                     'alignflow translate --model models:/alignflow-dates@champion "the 3rd of March 1998"',
                     "One output line per input line, in order; a blank line gives a blank line. A line longer than "
                     "the longest source the model was trained on (data.max_len tokens) is cut to that many tokens, "
                     "with a warning naming the line.")
    tr.add_argument("--model", required=True, help="models:/NAME/VERSION or models:/NAME@ALIAS")
    tr.add_argument("--beam", type=int, help="beam size (1 = greedy); default: the model's, as it was scored")
    tr.add_argument("--length-penalty", type=float, help="beam search length penalty alpha; default: the model's")
    tr.add_argument("--batch-size", type=int, help="sentences decoded together (default 64)")
    tr.add_argument("text", nargs="*", help="sentences; read from stdin (one per line) when none are given")
    tr.set_defaults(func=_translate)
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
        print(f"alignflow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
