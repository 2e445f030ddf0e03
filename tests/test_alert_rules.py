"""The disk-alert rules (SPEC section 5), driven by injected samples and an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.alerts.model import AlertMessage, PathState, Sample, Thresholds
from bot.alerts.rules import acknowledge, classify, evaluate, forecast_hours, snooze
from bot.alerts.text import format_forecast, human_bytes

GIB = 1024**3
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HOST = "web-01"
DEFAULT = Thresholds(warn_percent=80, critical_percent=90, hysteresis_percent=2, repeat_minutes=240)
REPEAT = timedelta(minutes=240)


def disk(
    percent: float,
    *,
    at: datetime = T0,
    path: str = "/var",
    total: int = 50 * GIB,
    inodes_total: int = 1_000_000,
    inodes_percent: float = 10.0,
) -> Sample:
    used = round(total * percent / 100)
    return Sample(
        path=path,
        at=at,
        used_percent=percent,
        total_bytes=total,
        used_bytes=used,
        free_bytes=total - used,
        inodes_total=inodes_total,
        inodes_used=round(inodes_total * inodes_percent / 100),
    )


class Run:
    """Feeds samples through evaluate round by round, carrying the states like the scheduler."""

    def __init__(self, thresholds: Thresholds = DEFAULT) -> None:
        self.thresholds = thresholds
        self.states: dict[tuple[str, str], PathState] = {}
        self.history: dict[str, list[tuple[datetime, float]]] = {}

    def step(self, *samples: Sample, now: datetime) -> list[AlertMessage]:
        self.states, messages = evaluate(samples, self.states, self.thresholds, now, self.history, HOST)
        return messages

    def space(self, percent: float, now: datetime, **kwargs: object) -> list[AlertMessage]:
        return self.step(disk(percent, at=now, **kwargs), now=now)  # type: ignore[arg-type]

    def state(self, kind: str = "space", path: str = "/var") -> PathState:
        return self.states[(path, kind)]


def summary(messages: list[AlertMessage]) -> list[tuple[str, str, str, str]]:
    return [(m.kind, m.reason, m.previous_level, m.level) for m in messages]


# --- thresholds -------------------------------------------------------------------------------------


def test_default_thresholds_are_valid() -> None:
    DEFAULT.validate()
    Thresholds().validate()


@pytest.mark.parametrize(
    ("thresholds", "field"),
    [
        (Thresholds(warn_percent=90, critical_percent=90), "warn_percent"),
        (Thresholds(warn_percent=95, critical_percent=90), "warn_percent"),
        (Thresholds(warn_percent=-1), "warn_percent"),
        (Thresholds(critical_percent=101), "critical_percent"),
        (Thresholds(warn_percent=float("nan")), "warn_percent"),
        (Thresholds(hysteresis_percent=-0.5), "hysteresis_percent"),
        (Thresholds(warn_percent=5, hysteresis_percent=5), "hysteresis_percent"),
        (Thresholds(repeat_minutes=0), "repeat_minutes"),
        (Thresholds(repeat_minutes=-10), "repeat_minutes"),
        (Thresholds(repeat_minutes=True), "repeat_minutes"),
        (Thresholds(repeat_minutes=float("inf")), "repeat_minutes"),
        (Thresholds(repeat_minutes=1e300), "repeat_minutes"),
        (Thresholds(warn_percent=1, hysteresis_percent=2), "hysteresis_percent"),
    ],
)
def test_invalid_thresholds_raise_naming_the_field(thresholds: Thresholds, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        thresholds.validate()


def test_evaluate_refuses_invalid_thresholds() -> None:
    with pytest.raises(ValueError, match="warn_percent"):
        evaluate([disk(50)], {}, Thresholds(warn_percent=95), T0, {}, HOST)


# --- transitions ------------------------------------------------------------------------------------


def test_space_walks_ok_warning_critical_warning_ok_posting_each_change() -> None:
    run = Run()
    seen = []
    for minute, percent in enumerate([50, 81, 91, 85, 70]):
        seen += summary(run.space(percent, T0 + timedelta(minutes=minute)))
    assert seen == [
        ("space", "change", "ok", "warning"),
        ("space", "change", "warning", "critical"),
        ("space", "change", "critical", "warning"),
        ("space", "resolved", "warning", "ok"),
    ]


def test_inodes_walk_ok_warning_critical_warning_ok_posting_each_change_while_space_stays_quiet() -> None:
    run = Run()
    seen = []
    for minute, inodes in enumerate([50, 81, 91, 85, 70]):
        now = T0 + timedelta(minutes=minute)
        seen += summary(run.step(disk(40, at=now, inodes_percent=inodes), now=now))
    assert seen == [
        ("inodes", "change", "ok", "warning"),
        ("inodes", "change", "warning", "critical"),
        ("inodes", "change", "critical", "warning"),
        ("inodes", "resolved", "warning", "ok"),
    ]
    assert run.state("space") == PathState()


def test_ok_to_critical_in_one_step_posts_critical_and_back_to_ok_resolves_it() -> None:
    run = Run()
    assert summary(run.space(95, T0)) == [("space", "change", "ok", "critical")]
    assert summary(run.space(10, T0 + timedelta(minutes=1))) == [("space", "resolved", "critical", "ok")]


def test_a_steady_ok_path_posts_nothing() -> None:
    run = Run()
    for minute in range(10):
        assert run.space(40, T0 + timedelta(minutes=minute)) == []
    assert run.state() == PathState()


def test_rising_needs_only_to_reach_the_threshold() -> None:
    run = Run()
    assert run.space(79.9, T0) == []
    assert summary(run.space(80.0, T0 + timedelta(minutes=1))) == [("space", "change", "ok", "warning")]
    assert summary(run.space(90.0, T0 + timedelta(minutes=2))) == [("space", "change", "warning", "critical")]


# --- hysteresis -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "value", "expected"),
    [
        ("warning", 79.0, "warning"),
        ("warning", 78.0, "warning"),  # exactly hysteresis below: not yet cleared
        ("warning", 77.9, "ok"),
        ("critical", 88.5, "critical"),
        ("critical", 88.0, "critical"),
        ("critical", 87.9, "warning"),
        ("critical", 78.0, "warning"),  # leaving critical still honours the warning hysteresis
        ("critical", 77.9, "ok"),
        ("ok", 79.9, "ok"),
        ("ok", 89.9, "warning"),
    ],
)
def test_a_level_clears_only_when_more_than_hysteresis_below_its_threshold(
    current: str, value: float, expected: str
) -> None:
    assert classify(value, current, DEFAULT) == expected


def test_hysteresis_absorbs_float_error_at_a_decimal_boundary() -> None:
    # 80 - 2.1 is 77.89999999999999 in floats; a reading of 77.9 is exactly on the boundary.
    thresholds = Thresholds(warn_percent=80, critical_percent=90, hysteresis_percent=2.1)
    assert classify(77.9, "warning", thresholds) == "warning"
    assert classify(77.8, "warning", thresholds) == "ok"


def test_hysteresis_through_evaluate_holds_then_clears_at_the_boundaries() -> None:
    run = Run()
    run.space(91, T0)
    assert run.space(88.0, T0 + timedelta(minutes=1)) == []
    assert summary(run.space(87.9, T0 + timedelta(minutes=2))) == [("space", "change", "critical", "warning")]
    assert run.space(78.0, T0 + timedelta(minutes=3)) == []
    assert summary(run.space(77.9, T0 + timedelta(minutes=4))) == [("space", "resolved", "warning", "ok")]


def test_zero_hysteresis_clears_just_below_the_threshold() -> None:
    thresholds = Thresholds(warn_percent=80, critical_percent=90, hysteresis_percent=0)
    assert classify(80.0, "warning", thresholds) == "warning"
    assert classify(79.9, "warning", thresholds) == "ok"


# --- repeats ----------------------------------------------------------------------------------------


def test_repeat_comes_exactly_repeat_minutes_after_the_last_post_not_a_second_earlier() -> None:
    run = Run()
    run.space(85, T0)
    assert run.space(85, T0 + REPEAT - timedelta(seconds=1)) == []
    messages = run.space(85, T0 + REPEAT)
    assert summary(messages) == [("space", "repeat", "warning", "warning")]
    assert "still 85.0% used" in messages[0].text
    # the next repeat counts from the repeat, not from the first post
    assert run.space(85, T0 + 2 * REPEAT - timedelta(seconds=1)) == []
    assert summary(run.space(85, T0 + 2 * REPEAT)) == [("space", "repeat", "warning", "warning")]


def test_repeat_timer_restarts_on_a_level_change() -> None:
    run = Run()
    run.space(85, T0)
    changed_at = T0 + timedelta(minutes=200)
    assert summary(run.space(95, changed_at)) == [("space", "change", "warning", "critical")]
    assert run.space(95, T0 + REPEAT) == []
    assert run.space(95, changed_at + REPEAT - timedelta(seconds=1)) == []
    assert summary(run.space(95, changed_at + REPEAT)) == [("space", "repeat", "critical", "critical")]


def test_ok_paths_never_repeat() -> None:
    run = Run()
    run.space(85, T0)
    run.space(50, T0 + timedelta(minutes=1))
    assert run.space(50, T0 + 10 * REPEAT) == []


def test_repeat_interval_follows_the_thresholds() -> None:
    run = Run(Thresholds(repeat_minutes=1.5))
    run.space(85, T0)
    assert run.space(85, T0 + timedelta(seconds=89)) == []
    assert [m.reason for m in run.space(85, T0 + timedelta(seconds=90))] == ["repeat"]


# --- acknowledge and snooze -------------------------------------------------------------------------


def test_acknowledge_stops_repeats_until_the_level_changes() -> None:
    run = Run()
    run.space(85, T0)
    run.states[("/var", "space")] = acknowledge(run.state(), T0 + timedelta(minutes=5))
    for periods in range(1, 6):
        assert run.space(85, T0 + periods * REPEAT) == []
    change_at = T0 + 6 * REPEAT
    assert summary(run.space(95, change_at)) == [("space", "change", "warning", "critical")]
    assert run.state().acknowledged is False
    assert summary(run.space(95, change_at + REPEAT)) == [("space", "repeat", "critical", "critical")]


def test_acknowledge_of_a_level_no_longer_in_force_changes_nothing() -> None:
    state = PathState(level="critical", posted_level="critical", last_post_at=T0)
    assert acknowledge(state, T0, level="warning") is state
    assert acknowledge(state, T0, level="critical").acknowledged is True
    ok = PathState()
    assert acknowledge(ok, T0) is ok


def test_snooze_stops_repeats_until_it_ends_then_the_schedule_resumes() -> None:
    run = Run()
    run.space(85, T0)
    snoozed_at = T0 + timedelta(minutes=200)
    run.states[("/var", "space")] = snooze(run.state(), snoozed_at, hours=1)
    assert run.state().snoozed_until == snoozed_at + timedelta(hours=1)
    assert run.space(85, T0 + REPEAT) == []
    assert run.space(85, snoozed_at + timedelta(hours=1) - timedelta(seconds=1)) == []
    assert summary(run.space(85, snoozed_at + timedelta(hours=1))) == [("space", "repeat", "warning", "warning")]
    assert run.state().snoozed_until is None


def test_snooze_shorter_than_the_repeat_interval_does_not_bring_the_repeat_forward() -> None:
    run = Run()
    run.space(85, T0)
    run.states[("/var", "space")] = snooze(run.state(), T0, hours=1)
    assert run.space(85, T0 + timedelta(hours=1)) == []
    assert run.space(85, T0 + REPEAT - timedelta(seconds=1)) == []
    assert [m.reason for m in run.space(85, T0 + REPEAT)] == ["repeat"]


def test_a_level_change_posts_through_a_snooze_and_clears_it() -> None:
    run = Run()
    run.space(85, T0)
    run.states[("/var", "space")] = snooze(run.state(), T0, hours=24)
    assert summary(run.space(95, T0 + timedelta(minutes=1))) == [("space", "change", "warning", "critical")]
    assert run.state().snoozed_until is None
    assert [m.reason for m in run.space(95, T0 + timedelta(minutes=1) + REPEAT)] == ["repeat"]


def test_snooze_refuses_a_non_positive_duration_and_ignores_stale_levels() -> None:
    state = PathState(level="warning", posted_level="warning", last_post_at=T0)
    with pytest.raises(ValueError, match="hours"):
        snooze(state, T0, hours=0)
    assert snooze(state, T0, level="critical") is state
    assert snooze(PathState(), T0) == PathState()


# --- resolved only after a posted problem -----------------------------------------------------------


def test_a_problem_that_was_never_posted_vanishes_without_a_resolved_message() -> None:
    states = {("/var", "space"): PathState(level="warning")}
    new_states, messages = evaluate([disk(50)], states, DEFAULT, T0, {}, HOST)
    assert messages == []
    assert new_states[("/var", "space")].level == "ok"


def test_resolved_appears_only_once_after_a_posted_problem() -> None:
    run = Run()
    run.space(85, T0)
    assert [m.reason for m in run.space(50, T0 + timedelta(minutes=1))] == ["resolved"]
    assert run.space(50, T0 + timedelta(minutes=2)) == []
    assert run.space(50, T0 + 3 * REPEAT) == []


def test_a_level_in_force_that_was_never_posted_is_posted_once() -> None:
    states = {("/var", "space"): PathState(level="warning")}
    new_states, messages = evaluate([disk(85)], states, DEFAULT, T0, {}, HOST)
    assert summary(messages) == [("space", "change", "ok", "warning")]
    _, again = evaluate([disk(85)], new_states, DEFAULT, T0 + timedelta(minutes=1), {}, HOST)
    assert again == []


def test_a_restart_with_stored_state_reposts_nothing() -> None:
    run = Run()
    run.space(85, T0)
    stored = dict(run.states)
    _, messages = evaluate([disk(85, at=T0 + timedelta(minutes=1))], stored, DEFAULT, T0, {}, HOST)
    assert messages == []


# --- forecast ---------------------------------------------------------------------------------------


def series(start_percent: float, per_hour: float, minutes: int = 60, step: int = 1) -> list[tuple[datetime, float]]:
    return [
        (T0 - timedelta(minutes=minutes - m), start_percent + per_hour * m / 60) for m in range(0, minutes + 1, step)
    ]


def test_forecast_on_a_rising_series_gives_hours_until_full() -> None:
    # 6 % per hour, at 84 % now: 16 % left is 2 h 40 min
    hours = forecast_hours(series(78, 6), T0)
    assert hours == pytest.approx(16 / 6)


def test_forecast_on_a_flat_series_is_none() -> None:
    assert forecast_hours(series(85, 0), T0) is None


def test_forecast_on_a_falling_series_is_none() -> None:
    assert forecast_hours(series(85, -3), T0) is None


def test_forecast_beyond_seven_days_is_none_and_within_it_is_given() -> None:
    # 20 % left: 0.1 %/h would take 200 h, 0.125 %/h takes exactly 160 h
    assert forecast_hours(series(80 - 0.1, 0.1), T0) is None
    assert forecast_hours(series(80 - 0.125, 0.125), T0) == pytest.approx(160)


def test_forecast_needs_three_samples_within_the_last_hour() -> None:
    assert forecast_hours([], T0) is None
    two = [(T0 - timedelta(minutes=10), 80.0), (T0, 81.0)]
    assert forecast_hours(two, T0) is None
    stale = [(T0 - timedelta(hours=2), 10.0), *two]
    assert forecast_hours(stale, T0) is None
    three = [(T0 - timedelta(minutes=20), 79.0), *two]
    assert forecast_hours(three, T0) == pytest.approx((100 - 81) / 6)


def test_forecast_ignores_samples_older_than_an_hour() -> None:
    old_and_falling = [(T0 - timedelta(hours=3, minutes=m), 99.0) for m in range(10)]
    assert forecast_hours(old_and_falling + series(78, 6), T0) == pytest.approx(16 / 6)


def test_forecast_of_samples_at_one_instant_is_none() -> None:
    assert forecast_hours([(T0, 80.0), (T0, 81.0), (T0, 82.0)], T0) is None


def test_forecast_when_the_line_already_passed_full_is_zero() -> None:
    assert forecast_hours(series(90, 30), T0) == 0.0


@pytest.mark.parametrize(
    ("hours", "text"),
    [
        (0.001, "full in less than a minute"),
        (1 / 60, "full in about 1 minute"),
        (0.5, "full in about 30 minutes"),
        (59.6 / 60, "full in about 1 hour"),
        (1.4, "full in about 1 hour"),
        (4.5, "full in about 5 hours"),
        (6.2, "full in about 6 hours"),
        (47.4, "full in about 47 hours"),
        (130, "full in about 130 hours (about 5 days)"),
    ],
)
def test_forecast_text_rounds_to_minutes_under_an_hour_and_hours_above(hours: float, text: str) -> None:
    assert format_forecast(hours) == text


def test_the_current_sample_joins_the_history_for_the_forecast() -> None:
    # history up to 5 minutes ago, the current reading completes the line
    history = {"/var": [(at, p) for at, p in series(78, 6) if at < T0]}
    _, messages = evaluate([disk(84.0)], {}, DEFAULT, T0, history, HOST)
    assert messages[0].forecast_hours == pytest.approx(16 / 6)
    assert messages[0].text.endswith("; full in about 3 hours")


def test_inode_alerts_carry_no_forecast() -> None:
    history = {"/var": series(78, 6)}
    _, messages = evaluate([disk(50, inodes_percent=85)], {}, DEFAULT, T0, history, HOST)
    assert [(m.kind, m.forecast_hours) for m in messages] == [("inodes", None)]
    assert "full in" not in messages[0].text


# --- text -------------------------------------------------------------------------------------------


def test_warning_text_names_host_path_figures_and_forecast() -> None:
    per_hour = 16.6 / 6  # reaches 100 % six hours after 83.4 %
    history = {"/var": [(T0 - timedelta(minutes=m), 83.4 - per_hour * m / 60) for m in (30, 15, 0)]}
    _, messages = evaluate([disk(83.4)], {}, DEFAULT, T0, history, HOST)
    assert [m.text for m in messages] == [
        "WARNING disk space on web-01:/var is 83.4% used (41.7 GiB of 50.0 GiB, 8.3 GiB free); full in about 6 hours"
    ]
    assert messages[0].forecast_hours == pytest.approx(6)


def test_resolved_text_says_back_to_with_figures() -> None:
    states = {("/var", "space"): PathState(level="warning", posted_level="warning", last_post_at=T0)}
    _, messages = evaluate([disk(76.0)], states, DEFAULT, T0, {}, HOST)
    assert [m.text for m in messages] == [
        "RESOLVED disk space on web-01:/var is back to 76.0% used (38.0 GiB of 50.0 GiB, 12.0 GiB free)"
    ]


def test_changes_between_problem_levels_say_which_way() -> None:
    run = Run()
    run.space(85, T0)
    up = run.space(91, T0 + timedelta(minutes=1))[0].text
    down = run.space(85, T0 + timedelta(minutes=2))[0].text
    assert up.startswith("CRITICAL disk space on web-01:/var is 91.0% used")
    assert up.endswith(", up from warning")
    assert down.startswith("WARNING disk space on web-01:/var is 85.0% used")
    assert down.endswith(", down from critical")


def test_inode_text_gives_inode_counts_and_disk_figures() -> None:
    _, messages = evaluate([disk(40, inodes_percent=91.5)], {}, DEFAULT, T0, {}, HOST)
    assert [m.text for m in messages] == [
        "CRITICAL inodes on web-01:/var are 91.5% used (915,000 of 1,000,000 inodes, 85,000 free; "
        "disk 20.0 GiB of 50.0 GiB, 30.0 GiB free)"
    ]


def test_at_signs_and_control_characters_in_paths_and_host_cannot_mention_or_break_the_post() -> None:
    sample = disk(85, path="/mnt/@channel\nx")
    _, messages = evaluate([sample], {}, DEFAULT, T0, {}, "db@all")
    text = messages[0].text
    assert "@" not in text
    assert "\n" not in text
    assert "db\uff20all:/mnt/\uff20channel?x" in text
    assert messages[0].path == "/mnt/@channel\nx"  # the key stays the real path


def test_undecodable_path_bytes_become_question_marks_so_the_text_encodes() -> None:
    path = b"/mnt/caf\xe9".decode("utf-8", "surrogateescape")
    _, messages = evaluate([disk(85, path=path)], {}, DEFAULT, T0, {}, HOST)
    messages[0].text.encode("utf-8")
    assert "/mnt/caf?" in messages[0].text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024**2 - 1, "1.0 MiB"),
        (50 * GIB, "50.0 GiB"),
        (int(41.7 * GIB), "41.7 GiB"),
        (3 * 1024**4, "3.0 TiB"),
        (2 * 1024**5, "2.0 PiB"),
    ],
)
def test_human_bytes_uses_binary_units_with_one_decimal(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_human_bytes_refuses_negative_sizes() -> None:
    with pytest.raises(ValueError):
        human_bytes(-1)


# --- inodes absent, unreadable paths ----------------------------------------------------------------


def test_a_filesystem_with_zero_inodes_gets_no_inode_level_or_message() -> None:
    run = Run()
    for minute, percent in enumerate([50, 85, 95, 50]):
        now = T0 + timedelta(minutes=minute)
        messages = run.step(disk(percent, at=now, inodes_total=0), now=now)
        assert all(m.kind == "space" for m in messages)
    assert ("/var", "inodes") not in run.states
    assert disk(50, inodes_total=0).inodes_percent is None


def test_an_unreadable_path_posts_once_and_neither_resolves_nor_repeats_the_space_alert() -> None:
    run = Run()
    run.space(95, T0)
    failed_at = T0 + timedelta(minutes=1)
    messages = run.step(Sample.unreadable("/var", failed_at, "timed out"), now=failed_at)
    assert summary(messages) == [("read", "change", "ok", "unreadable")]
    assert messages[0].text == (
        "UNREADABLE cannot read web-01:/var: timed out; its disk alerts are paused until it can be read again"
    )
    # still unreadable long past the repeat interval: silence, and the critical level is kept
    later = T0 + 2 * REPEAT
    assert run.step(Sample.unreadable("/var", later, "timed out"), now=later) == []
    assert run.state("space").level == "critical"
    # readable again: the read problem resolves, and the overdue space repeat goes out
    back = later + timedelta(minutes=1)
    messages = run.space(95, back)
    assert summary(messages) == [
        ("read", "resolved", "unreadable", "ok"),
        ("space", "repeat", "critical", "critical"),
    ]
    assert messages[0].text.startswith("RESOLVED web-01:/var can be read again: 95.0% used")


def test_an_unreadable_path_seen_for_the_first_time_is_reported() -> None:
    _, messages = evaluate([Sample.unreadable("/mnt/nfs", T0, "")], {}, DEFAULT, T0, {}, HOST)
    assert summary(messages) == [("read", "change", "ok", "unreadable")]
    assert "cannot read web-01:/mnt/nfs: unknown error" in messages[0].text


def test_one_unreadable_path_does_not_stop_the_others() -> None:
    run = Run()
    messages = run.step(Sample.unreadable("/mnt/nfs", T0, "timed out"), disk(85, path="/var"), now=T0)
    assert [(m.path, m.kind, m.level) for m in messages] == [
        ("/mnt/nfs", "read", "unreadable"),
        ("/var", "space", "warning"),
    ]


# --- evaluate's contract ----------------------------------------------------------------------------


def test_states_of_paths_without_a_sample_pass_through_unchanged() -> None:
    other = PathState(level="critical", posted_level="critical", last_post_at=T0)
    new_states, _ = evaluate([disk(50)], {("/old", "space"): other}, DEFAULT, T0 + REPEAT, {}, HOST)
    assert new_states[("/old", "space")] is other


def test_evaluate_does_not_mutate_its_inputs() -> None:
    states = {("/var", "space"): PathState(level="warning", posted_level="warning", last_post_at=T0)}
    history = {"/var": series(78, 6)}
    states_before, history_before = dict(states), {k: list(v) for k, v in history.items()}
    evaluate([disk(95)], states, DEFAULT, T0 + REPEAT, history, HOST)
    assert states == states_before
    assert history == history_before


def test_two_samples_for_one_path_in_a_round_are_refused() -> None:
    with pytest.raises(ValueError, match="/var"):
        evaluate([disk(50), disk(60)], {}, DEFAULT, T0, {}, HOST)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2024, 5, 1, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        disk(50, at=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate([disk(50)], {}, DEFAULT, naive, {}, HOST)
    with pytest.raises(ValueError, match="timezone-aware"):
        forecast_hours([(naive, 1.0)], T0)


def test_times_in_other_zones_compare_by_instant() -> None:
    run = Run()
    run.space(85, T0)
    tokyo = timezone(timedelta(hours=9))
    assert [m.reason for m in run.space(85, (T0 + REPEAT).astimezone(tokyo))] == ["repeat"]


def test_bad_sample_numbers_and_stored_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="used_percent"):
        disk(101)
    with pytest.raises(ValueError, match="inodes_used"):
        Sample(path="/", at=T0, inodes_total=1, inodes_used=2)
    with pytest.raises(ValueError, match="level"):
        PathState(level="panic")


# --- properties -------------------------------------------------------------------------------------


@st.composite
def thresholds_strategy(draw: st.DrawFn) -> Thresholds:
    warn = draw(st.integers(10, 980)) / 10
    critical = draw(st.integers(int(warn * 10) + 1, 1000)) / 10
    hysteresis = draw(st.integers(0, min(int(warn * 10) - 1, 100))) / 10
    repeat = draw(st.sampled_from([1, 5, 30, 240]))
    return Thresholds(warn, critical, hysteresis, repeat)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Thresholds, list[tuple]]:
    thresholds = draw(thresholds_strategy())
    repeat_seconds = int(thresholds.repeat_minutes * 60)
    # Readings cluster on the thresholds and their hysteresis edges, where the rules bite.
    edges = [
        edge + offset
        for edge in (thresholds.warn_percent, thresholds.critical_percent)
        for offset in (-thresholds.hysteresis_percent - 0.1, -thresholds.hysteresis_percent, -0.1, 0.0)
    ]
    percent = st.one_of(
        st.integers(0, 1000).map(lambda n: n / 10),
        st.sampled_from([round(min(max(e, 0.0), 100.0), 1) for e in edges]),
    )
    step = st.tuples(
        st.one_of(
            st.integers(0, 3 * repeat_seconds),
            st.sampled_from([repeat_seconds - 1, repeat_seconds, 1]),
        ),
        st.sampled_from(["/var", "/srv"]),
        percent,
        st.sampled_from([0, 1000]),
        percent,
        st.integers(0, 9).map(lambda n: n == 0),  # one reading in ten fails
        st.sampled_from([None, None, None, "ack", "snooze"]),
    )
    return thresholds, draw(st.lists(step, min_size=1, max_size=40))


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_random_sequences_never_repeat_early_never_resolve_unposted_and_evaluate_is_deterministic(
    case: tuple[Thresholds, list[tuple]],
) -> None:
    thresholds, steps = case
    states: dict[tuple[str, str], PathState] = {}
    history: dict[str, list[tuple[datetime, float]]] = {}
    now = T0
    posted: list[tuple[datetime, AlertMessage]] = []
    for advance, path, percent, inodes_total, inodes_percent, unreadable, action in steps:
        now += timedelta(seconds=advance)
        if action is not None:
            key = (path, "space")
            if key in states:
                change = acknowledge if action == "ack" else snooze
                states[key] = change(states[key], now)
        if unreadable:
            sample = Sample.unreadable(path, now, "timed out")
        else:
            sample = disk(percent, at=now, path=path, inodes_total=inodes_total, inodes_percent=inodes_percent)
            history.setdefault(path, []).append((now, percent))
        history = {p: [(t, v) for t, v in pts if now - t <= timedelta(hours=1)] for p, pts in history.items()}

        result = evaluate([sample], states, thresholds, now, history, HOST)
        # (c) deterministic: the same inputs give the same states and messages
        assert evaluate([sample], states, thresholds, now, history, HOST) == result
        states, messages = result
        posted += [(now, m) for m in messages]

    repeat = timedelta(minutes=thresholds.repeat_minutes)
    last: dict[tuple[str, str], tuple[datetime, AlertMessage]] = {}
    for at, message in posted:
        key = (message.path, message.kind)
        before = last.get(key)
        if message.reason == "repeat":
            # (a) a repeat follows a post of the same level, at least repeat_minutes later
            assert before is not None
            assert before[1].level == message.level
            assert at - before[0] >= repeat
        elif before is not None and before[1].level == message.level:
            raise AssertionError(f"{message.reason} posted the same level twice: {message}")
        if message.reason == "resolved":
            # (b) resolved only right after a posted problem for that path and kind
            assert before is not None
            assert before[1].level in ("warning", "critical", "unreadable")
            assert message.level == "ok"
        if message.reason == "change":
            assert message.level != "ok"
            assert message.level != message.previous_level
        last[key] = (at, message)
