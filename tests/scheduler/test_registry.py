import pytest

from kernel.scheduler.registry import SCHEDULERS, make_scheduler


def test_every_policy_is_registered_under_its_name():
    assert set(SCHEDULERS) == {"fifo", "rr", "priority", "sjf", "las", "plas"}
    for name in SCHEDULERS:
        assert make_scheduler(name).name == name


def test_options_reach_the_policy():
    assert make_scheduler("rr", quantum=7).quantum == 7


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("lottery", {}, "unknown scheduler 'lottery'; choose one of: fifo, las, plas, priority, rr, sjf"),
        ("rr", {"quantum": 0}, "quantum must be a positive"),
        ("rr", {"slices": 3}, "bad options for scheduler 'rr'"),
        ("priority", {"aging_steps": -1}, "aging_steps"),
        ("sjf", {"ratio": 1.5}, "ratio"),
        ("las", {"growth": 1}, "growth"),
        ("plas", {"aging_steps": 0}, "aging_steps"),
    ],
)
def test_bad_names_and_options_get_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_scheduler(name, **options)
