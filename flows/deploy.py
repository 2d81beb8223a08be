"""`alignflow deploy`: a Prefect deployment of `train_pipeline` on a schedule, served from this process.

`flow.serve` registers the deployment (with its schedule and the validated config as its parameters) with the
Prefect server at PREFECT_API_URL, then runs each scheduled flow run in a subprocess until interrupted. A
scheduled run retries its data and registration tasks (see flows/pipeline.py); a run that fails before
registering leaves the champion alias where it was. For a work-pool setup instead, see prefect.yaml."""

from datetime import timedelta
from pathlib import Path

from data_prep.errors import ConfigError
from flows.config import load_config
from flows.provenance import git_commit


def _check_server() -> str:
    """Schedules need a real server: Prefect's ephemeral API lives only as long as this process."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError("PREFECT_API_URL is not set: start a server (`prefect server start` or infra/) and "
                          "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    return url


def _check_cron(expr: str) -> str:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=expr)
    except ValueError:
        raise ConfigError(f"--cron {expr!r}: not a cron expression (e.g. '0 3 * * *')") from None
    return expr


def serve(name: str, config_path: str, overrides: list[str] | None = None, cron: str | None = None,
          interval: float | None = None, limit: int = 1) -> None:
    """Creates or updates deployment `train-pipeline/NAME` and serves it; blocks until interrupted."""
    if (cron is None) == (interval is None):
        raise ConfigError("give exactly one of --cron or --interval")
    if interval is not None and interval <= 0:
        raise ConfigError(f"--interval {interval}: must be a positive number of seconds")
    config = load_config(config_path, overrides)  # a bad file fails here, not in every scheduled run
    schedule = {"cron": _check_cron(cron)} if cron else {"interval": timedelta(seconds=float(interval or 0))}
    api = _check_server()

    from flows.pipeline import train_pipeline

    print(f"serving deployment train-pipeline/{name} from {Path(config_path).name} against {api} "
          f"({'cron ' + cron if cron else f'every {interval:g}s'}); Ctrl-C stops it")
    # `limit`: runs overlap at most this much, so a slow run and the next schedule tick never fight for CPUs.
    train_pipeline.serve(
        name=name, parameters={"config": config.model_dump(mode="json")},
        description=f"alignflow {Path(config_path).name}", tags=["alignflow"], limit=limit,
        version=git_commit()[:12], **schedule)
