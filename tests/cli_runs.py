"""CLI runs in-process for the fault tests: exit status, stderr, and the one-line refusal."""

from __future__ import annotations

from workbench import cli


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``workbench ARGV`` run in-process."""
    capsys.readouterr()
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


def refused(rc: int, err: str, *fragments: str) -> str:
    """The one `error:` line of a refusal (exit 2, no traceback), checked to contain ``fragments``."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
