from importlib.metadata import version

import pytest

from flows.cli import main, parser


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"alignflow {version('alignflow')}"


@pytest.mark.parametrize("command", [[], ["run"], ["translate"], ["evaluate"], ["deploy"]])
def test_every_help_ends_with_a_one_line_example(command, capsys):
    with pytest.raises(SystemExit):
        parser().parse_args([*command, "--help"])
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith(f"example: alignflow {command[0] if command else ''}".rstrip()), last
