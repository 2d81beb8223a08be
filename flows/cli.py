"""`alignflow run` and `alignflow translate`. User errors print one line and exit 2, never a traceback."""

import argparse
import os
import sys

from data_prep.errors import AlignflowError


def _run(args: argparse.Namespace) -> int:
    from flows.config import load_config

    config = load_config(args.config, args.set)  # validate before anything starts
    from flows.pipeline import train_pipeline

    train_pipeline(config)
    return 0


def _translate(args: argparse.Namespace) -> int:
    import mlflow

    from training.tracking import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(None))
    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    try:
        model = mlflow.pyfunc.load_model(args.model)
    except mlflow.exceptions.MlflowException as e:
        raise AlignflowError(f"--model {args.model}: {str(e).splitlines()[0]}") from None
    for out in model.predict(texts):
        print(out)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alignflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="prepare data, train on Ray, evaluate and register (a Prefect flow)")
    run.add_argument("--config", help="YAML config (see configs/default.yaml)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    run.set_defaults(func=_run)
    tr = sub.add_parser("translate", help="translate text with a registered model")
    tr.add_argument("--model", required=True, help="models:/NAME/VERSION or models:/NAME@ALIAS")
    tr.add_argument("text", nargs="*", help="sentences; read from stdin (one per line) when none are given")
    tr.set_defaults(func=_translate)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
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
