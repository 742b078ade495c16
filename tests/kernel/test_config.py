"""aiosd's command line: policy options reach the scheduler, bad ones are refused before any model loads."""

import pytest

from kernel.daemon.config import parse_args
from kernel.daemon.main import main


def test_sched_opt_values_are_numbers_keyed_by_python_names():
    args = parse_args(["--scheduler", "priority", "--sched-opt", "aging-steps=16", "--sched-opt", "margin=0.5"])
    assert dict(args.sched_opt) == {"aging_steps": 16, "margin": 0.5}


@pytest.mark.parametrize("option", ["aging_steps", "=3", "aging_steps=fast"])
def test_malformed_sched_opt_is_a_usage_error(option):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--sched-opt", option])
    assert exit_info.value.code == 2


def test_unknown_policy_option_stops_aiosd_with_a_clear_error(caplog):
    assert main(["--scheduler", "las", "--sched-opt", "aging_steps=3"]) == 2
    assert "bad options for scheduler 'las'" in caplog.text
