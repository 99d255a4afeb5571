"""`python -m fishchat_operator.uninstall` refuses malformed arguments with a message, before any API call."""

from __future__ import annotations

import pytest

from fishchat_operator.uninstall import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo"], "'demo' is not NAMESPACE/NAME"),
        (["chat/"], "'chat/' is not NAMESPACE/NAME"),
        (["a/b/c"], "'a/b/c' is not NAMESPACE/NAME"),
        (["--timeout=0", "chat/demo"], "--timeout must be positive"),
        ([], "the following arguments are required"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
