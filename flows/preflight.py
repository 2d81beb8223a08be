"""What `alignflow run` checks and sets up before any work starts: the servers named in the config or the
environment answer, the Ray cluster can hold the job, and Prefect's temporary server is up."""

import base64
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock

from data_prep.errors import UnavailableError
from flows.config import PipelineConfig
from training.tracking import redact_uri

TIMEOUT_S = 5.0


def check_servers(config: PipelineConfig) -> None:
    """One line per server that does not answer (the Prefect API, the MLflow tracking server, the Ray
    cluster), all of them at once, before anything starts. Local stores and a new local cluster need none."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

    from training.tracking import resolve_tracking_uri
    from training.trainer import ray_address

    problems = []
    if api := PREFECT_API_URL.value():
        problems.append(_http(f"Prefect API PREFECT_API_URL={redact_uri(api)}", api.rstrip("/") + "/health",
                              _auth(PREFECT_API_AUTH_STRING.value(), PREFECT_API_KEY.value())))
    problems.append(_tracking_problem(resolve_tracking_uri(config.tracking.uri)))
    address = ray_address(config.scaling)
    if address not in ("local", "auto"):
        problems.append(_tcp(f"Ray cluster {address}", address))
    if lines := [p for p in problems if p]:
        raise UnavailableError("\n".join(lines))


def check_tracking(config: PipelineConfig) -> None:
    """The MLflow tracking server alone (commands that need nothing else)."""
    from training.tracking import resolve_tracking_uri

    if problem := _tracking_problem(resolve_tracking_uri(config.tracking.uri)):
        raise UnavailableError(problem)


def _tracking_problem(uri: str) -> str | None:
    if not uri.startswith(("http://", "https://")):
        return None  # a local store
    parts = urlsplit(uri)  # /health needs no credentials, and urllib takes none in the URL
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return _http(f"MLflow tracking server {redact_uri(uri)}", bare.rstrip("/") + "/health")


def _auth(auth_string: str | None, api_key: str | None) -> dict[str, str]:
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    if auth_string:
        return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}
    return {}


def _http(what: str, url: str, headers: dict[str, str] | None = None) -> str | None:
    """None if the server answered; any HTTP status below 500 is an answer (credentials are checked later,
    by the call that needs them)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=TIMEOUT_S):
            return None
    except urllib.error.HTTPError as e:
        return None if e.code < 500 else f"{what}: answered HTTP {e.code} {e.reason}"
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"{what}: unreachable ({reason})"


def _tcp(what: str, address: str) -> str | None:
    """A TCP connection to the cluster's GCS (host:port) or Ray Client server (ray://host:port)."""
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port or (10001 if address.startswith("ray://") else 6379)
    except ValueError as e:
        return f"{what}: not host:port ({e})"
    try:
        socket.create_connection((host, port), timeout=TIMEOUT_S).close()
        return None
    except OSError as e:
        return f"{what}: unreachable ({e.strerror or e})"


def check_cluster(config: PipelineConfig) -> None:
    """Fails at once if the Ray cluster can never hold the job. A new local cluster is not started for this:
    Ray's own reckoning of this machine says what it would have. A named cluster is joined (fit reuses the
    connection) and asked."""
    from training.trainer import check_fits, connect, local_node, ray_address

    if ray_address(config.scaling) == "local":
        check_fits(config.scaling, [local_node()])
    else:
        connect(config.scaling)
        check_fits(config.scaling)


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
