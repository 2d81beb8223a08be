"""`alignflow deploy` input errors: one line, exit 2, before anything talks to a server."""

import pytest

from flows.cli import main
from tests.conftest import REPO


@pytest.mark.parametrize(("args", "message"), [
    (["--config", "missing.yaml", "--interval", "60"], "missing.yaml: config file not found"),
    (["--config", str(REPO / "configs/default.yaml"), "--cron", "every night"], "not a cron expression"),
    (["--config", str(REPO / "configs/default.yaml"), "--interval", "0"], "must be a positive number"),
    (["--config", str(REPO / "configs/default.yaml"), "--interval", "60"], "PREFECT_API_URL is not set"),
])
def test_deploy_rejects_bad_input_in_one_line(args, message, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # as without the suite's Prefect server
        assert main(["deploy", "--name", "nightly", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alignflow: error: ") and message in err[0], err


def test_deploy_needs_exactly_one_schedule(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["deploy", "--name", "n", "--config", "x.yaml", "--cron", "0 3 * * *", "--interval", "5"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
