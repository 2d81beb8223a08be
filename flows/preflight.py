"""What `alignflow run` checks and sets up before any work starts."""

from pathlib import Path

from filelock import FileLock


def start_ephemeral_prefect() -> None:
    """Without PREFECT_API_URL every run starts its own temporary Prefect API on the one sqlite database in
    PREFECT_HOME, and the first to start creates its tables. Two runs starting at once would both migrate it and
    one fails; so the temporary server is started here, under a lock file, and the flow then reuses it."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    home = Path(PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(home / "alignflow-ephemeral-server.lock"):
        SubprocessASGIServer().start()  # one per process; the flow's client finds it running
