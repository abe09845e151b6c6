"""Fault rules without a server: parsing, validation, matching, seeded draws and counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from eventbooking import fault_injection as fi
from eventbooking.settings import ServiceSettings, load

SEND = "/eventbooking.notification.v1.NotificationService/SendNotification"
LIST = "/eventbooking.notification.v1.NotificationService/ListNotifications"
CHARGE = "/eventbooking.account.v1.AccountService/Charge"


def rule(**fields: object) -> dict[str, object]:
    return {"service": "notification_svc", "method": "SendNotification", **fields}


def injector(*rules: dict[str, object], seed: int = 0) -> fi.Injector:
    return fi.Injector(
        fi.parse_plan({"seed": seed, "rules": list(rules)}), service_name="notification_svc"
    )


def test_every_kind_parses_with_its_own_fields_and_round_trips_through_json() -> None:
    plan = fi.loads(
        json.dumps(
            {
                "seed": 42,
                "rules": [
                    rule(kind="error", code="UNAVAILABLE", message="down", probability=0.5),
                    rule(kind="delay", seconds=1.5, count=3),
                    rule(kind="lost_reply"),
                    rule(kind="crash", when="after", count=1),
                ],
            }
        )
    )

    assert plan.seed == 42
    error, delay, lost, crash = plan.rules
    assert (error.kind, error.code, error.message, error.probability) == (
        "error",
        "UNAVAILABLE",
        "down",
        0.5,
    )
    assert (delay.seconds, delay.count) == (1.5, 3)
    assert lost.probability is None
    assert lost.count is None
    assert (crash.when, crash.count) == ("after", 1)
    assert fi.parse_plan(plan.to_json()) == plan


def test_defaults_a_bare_list_seed_zero_an_error_message_and_a_crash_before() -> None:
    plan = fi.parse_plan([rule(kind="error", code="INTERNAL"), rule(kind="crash")])

    assert plan.seed == 0
    assert plan.rules[0].message == "INTERNAL (injected)"
    assert plan.rules[1].when == "before"


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (rule(kind="boom"), "kind 'boom' is not one of error, delay, lost_reply, crash"),
        ({"method": "Charge", "kind": "lost_reply"}, "service is required"),
        (rule(kind="error"), "code must be a gRPC status code name"),
        (rule(kind="error", code="OK"), "code must be a gRPC status code name"),
        (rule(kind="error", code="UNAVAILABLE", seconds=1), "seconds not allowed on a error"),
        (rule(kind="delay"), "seconds must be a number above 0"),
        (rule(kind="delay", seconds=-1), "seconds must be a number above 0"),
        (rule(kind="crash", when="during"), "when must be before or after"),
        (rule(kind="lost_reply", probability=1.5), "probability must be a number from 0 to 1"),
        (rule(kind="lost_reply", count=0), "count must be a whole number"),
        (rule(kind="lost_reply", count=True), "count must be a whole number"),
        (rule(kind="lost_reply", count=1, probability=0.5), "probability or count, not both"),
        ("lost_reply", "a rule must be an object"),
    ],
)
def test_a_bad_rule_is_refused_naming_its_number_and_the_problem(bad: object, problem: str) -> None:
    good = rule(kind="lost_reply")

    with pytest.raises(fi.InvalidFaults) as refused:
        fi.parse_plan({"rules": [good, bad]})

    assert str(refused.value).startswith("fault rule 2 ")
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"seed": "x", "rules": []}', "seed must be a whole number"),
        ('{"rules": {}}', "rules must be a list"),
        ('{"seeds": 1}', "unknown key seeds"),
        ("3", "must be"),
    ],
)
def test_a_bad_rule_set_is_refused_with_a_readable_reason(text: str, problem: str) -> None:
    with pytest.raises(fi.InvalidFaults, match=problem):
        fi.loads(text)


def test_a_rule_matches_its_process_or_grpc_service_name_or_star_and_its_method() -> None:
    names = frozenset({"notification_svc", "eventbooking.notification.v1.NotificationService"})
    for service in ("notification_svc", "eventbooking.notification.v1.NotificationService", "*"):
        assert fi.Rule(service, "SendNotification", "lost_reply").matches(names, "SendNotification")
    assert fi.Rule("*", "*", "lost_reply").matches(names, "ListNotifications")
    assert not fi.Rule("account_svc", "*", "lost_reply").matches(names, "SendNotification")
    assert not fi.Rule("*", "Charge", "lost_reply").matches(names, "SendNotification")


def test_the_injector_knows_the_short_grpc_service_name_and_leaves_other_methods_alone() -> None:
    faults = injector({"service": "NotificationService", "method": "*", "kind": "lost_reply"})

    assert faults.decide(SEND).outcome is not None
    assert faults.decide(CHARGE).outcome is None


def test_the_fault_service_health_and_reflection_are_never_faulted() -> None:
    faults = injector({"service": "*", "method": "*", "kind": "error", "code": "INTERNAL"})

    for method in (
        f"/{fi.SERVICE_NAME}/ListFaults",
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ):
        assert faults.decide(method) == fi.Decision()
    assert faults.status()[0][1] == 0


def test_a_count_rule_fires_on_the_next_n_matching_calls_only() -> None:
    faults = injector(rule(kind="lost_reply", count=2))

    outcomes = [faults.decide(SEND).outcome is not None for _ in range(4)]
    faults.decide(LIST)

    assert outcomes == [True, True, False, False]
    assert faults.status() == [(faults.status()[0][0], 2, 0)]


def test_the_same_seed_repeats_the_same_faults_and_another_seed_does_not() -> None:
    def run(seed: int) -> list[bool]:
        faults = injector(rule(kind="lost_reply", probability=0.5), seed=seed)
        return [faults.decide(SEND).outcome is not None for _ in range(200)]

    first = run(7)

    assert run(7) == first
    assert run(8) != first
    assert 60 < sum(first) < 140


def test_replacing_the_rules_restarts_the_draws_from_the_new_seed() -> None:
    faults = injector(rule(kind="lost_reply", probability=0.3), seed=3)
    first = [faults.decide(SEND).outcome is not None for _ in range(50)]

    faults.replace(fi.parse_plan({"seed": 3, "rules": [rule(kind="lost_reply", probability=0.3)]}))

    assert [faults.decide(SEND).outcome is not None for _ in range(50)] == first


def test_probability_zero_never_fires_and_no_trigger_fires_every_time() -> None:
    faults = injector(rule(kind="error", code="ABORTED", probability=0), rule(kind="lost_reply"))

    decisions = [faults.decide(SEND) for _ in range(20)]

    assert {d.outcome.kind if d.outcome else None for d in decisions} == {"lost_reply"}


def test_delays_add_up_and_only_the_first_other_fault_applies() -> None:
    faults = injector(
        rule(kind="delay", seconds=0.5),
        rule(kind="error", code="UNAVAILABLE"),
        rule(kind="delay", seconds=0.25),
        rule(kind="lost_reply", count=1),
    )

    decision = faults.decide(SEND)

    assert decision.delay == 0.75
    assert decision.outcome is not None
    assert decision.outcome.kind == "error"
    assert decision.kinds == ("delay", "error", "delay")
    # The lost reply was not consumed by a call that already had its fault.
    assert [fired for _, fired, _ in faults.status()] == [1, 1, 1, 0]
    assert faults.status()[3][2] == 1


def test_clear_removes_every_rule_and_says_how_many() -> None:
    faults = injector(rule(kind="lost_reply"), rule(kind="crash"))

    assert faults.clear() == 2
    assert faults.status() == []
    assert faults.decide(SEND) == fi.Decision()


def test_proto_rules_are_validated_like_json_ones_and_round_trip() -> None:
    plan = fi.parse_plan(
        [
            rule(kind="error", code="UNAVAILABLE", message="down", probability=0.25),
            rule(kind="delay", seconds=0.125, count=2),
            rule(kind="lost_reply"),
            rule(kind="crash", when="after"),
        ]
    )

    back = [fi.rule_from_proto(fi.rule_to_proto(r), i) for i, r in enumerate(plan.rules, 1)]

    assert tuple(back) == plan.rules
    with pytest.raises(fi.InvalidFaults, match=r"fault rule 3 .*kind is required"):
        fi.rule_from_proto(fi.pb.FaultRule(service="*", method="*"), 3)


class PrefixedSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROBE_SVC_", frozen=True, extra="ignore")


SECRETS = {
    "service_name": "probe_svc",
    "port": 0,
    "admin_token": "admin-token-for-tests-only",
    "service_credential": "service-credential-for-tests",
}


def test_settings_read_rules_from_json_or_a_file_and_none_by_default(tmp_path: Path) -> None:
    text = json.dumps({"seed": 5, "rules": [rule(kind="lost_reply", count=1)]})
    path = tmp_path / "faults.json"
    path.write_text(text)

    from_json = ServiceSettings(**SECRETS, faults=text)  # type: ignore[arg-type]
    from_file = ServiceSettings(**SECRETS, faults_file=path)  # type: ignore[arg-type]

    assert from_json.fault_plan() == from_file.fault_plan() == fi.loads(text)
    assert ServiceSettings(**SECRETS).fault_plan() == fi.Plan()  # type: ignore[arg-type]
    assert ServiceSettings(**SECRETS).fault_control is False  # type: ignore[arg-type]


def test_bad_rules_stop_the_settings_naming_the_rule(tmp_path: Path) -> None:
    bad = json.dumps([rule(kind="lost_reply"), rule(kind="delay", seconds="soon")])
    path = tmp_path / "faults.json"
    path.write_text(bad)

    with pytest.raises(ValidationError, match=r"fault rule 2 .*seconds must be a number"):
        ServiceSettings(**SECRETS, faults=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="fault rule 2"):
        ServiceSettings(**SECRETS, faults_file=path)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="cannot read"):
        ServiceSettings(**SECRETS, faults_file=tmp_path / "missing.json")  # type: ignore[arg-type]
    path.write_text("[]")
    with pytest.raises(ValidationError, match="FAULTS or FAULTS_FILE, not both"):
        ServiceSettings(**SECRETS, faults="[]", faults_file=path)  # type: ignore[arg-type]


def test_loading_settings_with_bad_rules_exits_naming_the_variable_and_the_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROBE_SVC_SERVICE_NAME", "probe_svc")
    monkeypatch.setenv("PROBE_SVC_PORT", "0")
    monkeypatch.setenv("PROBE_SVC_ADMIN_TOKEN", "admin-token-for-tests-only")
    monkeypatch.setenv("PROBE_SVC_SERVICE_CREDENTIAL", "service-credential-for-tests")
    monkeypatch.setenv("PROBE_SVC_FAULTS", json.dumps([rule(kind="crash", when="later")]))

    with pytest.raises(SystemExit) as stopped:
        load(PrefixedSettings)

    message = str(stopped.value.code)
    assert "PROBE_SVC_FAULTS:" in message
    assert "fault rule 1" in message
    assert "when must be before or after" in message
