"""Faults a server injects into its own RPCs on purpose, for fault-injection tests.

A rule names a service and a method (or "*") and a kind:

- `error`: the call fails with `code` and `message`; the handler does not run;
- `delay`: the handler runs `seconds` late;
- `lost_reply`: the handler runs and its work is kept, then the caller gets
  UNAVAILABLE "reply lost (injected)" instead of the reply;
- `crash`: the process ends with `os._exit(87)` `when` "before" or "after"
  the handler.

Each rule fires with a `probability` or on the next `count` matching calls
(on every one when it has neither). A call gets every delay that fires and
at most one other fault, the first in rule order. The draws come from one
`random.Random(seed)` per process, so the same calls in the same order get
the same faults. On a server stream, faults before the handler come before
its first message; "after" faults come once it produced its first message
(or ended), which is dropped.

Rules come from the `<PREFIX>FAULTS` (JSON) or `<PREFIX>FAULTS_FILE`
settings at start, validated there, and from `FaultService.SetFaults` when
`<PREFIX>FAULT_CONTROL=true`. They never apply to the FaultService, health
or reflection.

The module is not `eventbooking.faults`: that name is the package of the
generated FaultService code (proto/eventbooking/faults/v1).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, cast, get_args

import grpc
from google.protobuf.duration_pb2 import Duration

from eventbooking.errors import FailedPrecondition, InvalidArgument
from eventbooking.faults.v1 import faults_pb2 as pb
from eventbooking.faults.v1 import faults_pb2_grpc as pb_grpc
from eventbooking.rpc import Context, ServerInterceptor, StreamHandler, UnaryHandler

log = logging.getLogger(__name__)

Kind = Literal["error", "delay", "lost_reply", "crash"]
When = Literal["before", "after"]
KINDS: tuple[str, ...] = get_args(Kind)
EXIT_CODE = 87
LOST_REPLY_MESSAGE = "reply lost (injected)"
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["FaultService"].full_name
# Never faulted: the control itself, and what probes and `grpcurl list` use.
EXEMPT_PREFIXES = (f"/{SERVICE_NAME}/", "/grpc.health.v1.Health/", "/grpc.reflection.")

_CODES = {code.name: code for code in grpc.StatusCode if code is not grpc.StatusCode.OK}
_COMMON = {"service", "method", "kind", "probability", "count"}
_FIELDS: dict[str, set[str]] = {
    "error": _COMMON | {"code", "message"},
    "delay": _COMMON | {"seconds"},
    "lost_reply": _COMMON,
    "crash": _COMMON | {"when"},
}
MAX_DELAY_SECONDS = 3600.0


class InvalidFaults(ValueError):
    """A rule set that cannot be applied; the message names the bad rule."""


@dataclass(frozen=True)
class Rule:
    """One fault: where it applies, what it does, and when it fires."""

    service: str
    method: str
    kind: Kind
    code: str = ""
    message: str = ""
    seconds: float = 0.0
    when: When = "before"
    probability: float | None = None
    count: int | None = None

    def matches(self, services: frozenset[str], method: str) -> bool:
        """Whether a call of `method` on a server known by `services` is in scope."""
        return (self.service == "*" or self.service in services) and self.method in ("*", method)

    def to_json(self) -> dict[str, Any]:
        """The rule as it is written in `<PREFIX>FAULTS`."""
        data: dict[str, Any] = {"service": self.service, "method": self.method, "kind": self.kind}
        if self.kind == "error":
            data |= {"code": self.code, "message": self.message}
        elif self.kind == "delay":
            data["seconds"] = self.seconds
        elif self.kind == "crash":
            data["when"] = self.when
        if self.probability is not None:
            data["probability"] = self.probability
        if self.count is not None:
            data["count"] = self.count
        return data


@dataclass(frozen=True)
class Plan:
    """A rule set and the seed of its draws."""

    rules: tuple[Rule, ...] = ()
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "rules": [rule.to_json() for rule in self.rules]}


def parse_rule(raw: object, index: int) -> Rule:
    """Validate rule number `index` (from 1) of a rule set; InvalidFaults names it."""

    def bad(problem: str) -> InvalidFaults:
        shown = json.dumps(raw, sort_keys=True, default=str) if isinstance(raw, dict) else raw
        return InvalidFaults(f"fault rule {index} {shown}: {problem}")

    if not isinstance(raw, dict):
        raise bad("a rule must be an object with service, method and kind")
    for key in ("service", "method", "kind"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise bad(f"{key} is required and must be a non-empty string")
    kind = raw["kind"]
    if kind not in KINDS:
        raise bad(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    unknown = sorted(set(raw) - _FIELDS[kind])
    if unknown:
        raise bad(f"{', '.join(unknown)} not allowed on a {kind} rule")
    if "probability" in raw and "count" in raw:
        raise bad("give probability or count, not both")
    probability = raw.get("probability")
    if probability is not None and (
        isinstance(probability, bool)
        or not isinstance(probability, int | float)
        or not 0 <= probability <= 1
    ):
        raise bad("probability must be a number from 0 to 1")
    count = raw.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise bad("count must be a whole number of calls, at least 1")
    code: Any = ""
    message: Any = ""
    seconds: Any = 0.0
    when: Any = "before"
    if kind == "error":
        code = raw.get("code")
        if code not in _CODES:
            raise bad("code must be a gRPC status code name other than OK, such as UNAVAILABLE")
        message = raw.get("message", f"{code} (injected)")
        if not isinstance(message, str):
            raise bad("message must be a string")
    if kind == "delay":
        seconds = raw.get("seconds")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds <= MAX_DELAY_SECONDS
        ):
            raise bad(f"seconds must be a number above 0, at most {MAX_DELAY_SECONDS:g}")
    if kind == "crash":
        when = raw.get("when", "before")
        if when not in get_args(When):
            raise bad("when must be before or after")
    return Rule(
        service=raw["service"].strip(),
        method=raw["method"].strip(),
        kind=kind,
        code=code,
        message=message,
        seconds=float(seconds),
        when=when,
        probability=None if probability is None else float(probability),
        count=count,
    )


def parse_plan(data: object) -> Plan:
    """A rule set from `{"seed": 7, "rules": [...]}`, or a bare list of rules with seed 0."""
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict):
        raise InvalidFaults('fault rules must be {"seed": <int>, "rules": [...]} or a list')
    unknown = sorted(set(data) - {"seed", "rules"})
    if unknown:
        raise InvalidFaults(f"unknown key {', '.join(unknown)}; expected seed and rules")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidFaults("seed must be a whole number")
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise InvalidFaults("rules must be a list")
    return Plan(tuple(parse_rule(raw, i) for i, raw in enumerate(rules, start=1)), seed)


def loads(text: str) -> Plan:
    """A rule set from its JSON text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidFaults(f"fault rules are not valid JSON: {err}") from None
    return parse_plan(data)


def load_file(path: Path) -> Plan:
    """A rule set from a JSON file."""
    try:
        text = path.read_text()
    except OSError as err:
        raise InvalidFaults(f"cannot read {path}: {err.strerror or err}") from None
    return loads(text)


@dataclass
class _Armed:
    rule: Rule
    fired: int = 0
    remaining: int | None = None


@dataclass(frozen=True)
class Decision:
    """What one call gets: a total delay, and at most one other fault."""

    delay: float = 0.0
    outcome: Rule | None = None
    kinds: tuple[str, ...] = ()


class Injector:
    """The live rules of one server, the draws, and how often each rule fired."""

    def __init__(
        self,
        plan: Plan = Plan(),
        *,
        service_name: str,
        control: bool = False,
        control_variable: str = "FAULT_CONTROL",
        exit: Callable[[int], NoReturn] = os._exit,
    ) -> None:
        self.service_name = service_name
        self.control = control
        self.control_variable = control_variable
        self._exit = exit
        self.replace(plan)

    def replace(self, plan: Plan) -> None:
        """Apply `plan` from now on: counts, fired totals and draws start over."""
        self._plan = plan
        # Repeatable draws are the point here, not unpredictable ones.
        self._random = random.Random(plan.seed)  # noqa: S311
        self._armed = [_Armed(rule, remaining=rule.count) for rule in plan.rules]
        if plan.rules:
            log.warning("fault rules set", extra={"faults": json.dumps(plan.to_json())})

    def clear(self) -> int:
        """Remove every rule; return how many there were."""
        cleared = len(self._armed)
        self.replace(Plan(seed=self._plan.seed))
        return cleared

    @property
    def seed(self) -> int:
        return self._plan.seed

    def status(self) -> list[tuple[Rule, int, int | None]]:
        """Each rule, how many calls it fired on, and for count rules how many remain."""
        return [(armed.rule, armed.fired, armed.remaining) for armed in self._armed]

    @property
    def armed(self) -> bool:
        """True while any rule is set: only then do calls go through the fault path."""
        return bool(self._armed)

    def decide(self, method_path: str) -> Decision:
        """Draw the faults of one call of `method_path` ("/pkg.Service/Method")."""
        if not self._armed or method_path.startswith(EXEMPT_PREFIXES):
            return Decision()
        grpc_service, _, method = method_path.lstrip("/").partition("/")
        names = frozenset({self.service_name, grpc_service, grpc_service.rpartition(".")[2]})
        delay: float = 0.0
        outcome: Rule | None = None
        fired: list[str] = []
        for armed in self._armed:
            rule = armed.rule
            if (outcome is not None and rule.kind != "delay") or not rule.matches(names, method):
                continue
            if not self._fires(armed):
                continue
            armed.fired += 1
            fired.append(rule.kind)
            if rule.kind == "delay":
                delay += rule.seconds
            else:
                outcome = rule
        return Decision(delay, outcome, tuple(fired))

    def _fires(self, armed: _Armed) -> bool:
        if armed.remaining is not None:
            if armed.remaining == 0:
                return False
            armed.remaining -= 1
            return True
        probability = 1.0 if armed.rule.probability is None else armed.rule.probability
        # Drawn even at probability 1, so adding a certain rule does not shift later draws.
        return self._random.random() < probability

    def crash(self, rule: Rule, method_path: str) -> NoReturn:
        log.critical("fault injected: crashing", extra={"method": method_path, "when": rule.when})
        # os._exit skips flushing; the crash line is the one a test reads afterwards.
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit(EXIT_CODE)

    def interceptor(self) -> FaultInterceptor:
        return FaultInterceptor(self)


class FaultInterceptor(ServerInterceptor):
    """Applies the injector's faults around unary and server-streaming handlers.

    `create_server` places it innermost, after the access checks, so only
    admitted calls are faulted and the metrics count the injected status.
    """

    def __init__(self, injector: Injector) -> None:
        self._injector = injector

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        # With no rule set, as in every deployment that is not under test, a call costs nothing.
        if handler is None or not self._injector.armed or method.startswith(EXEMPT_PREFIXES):
            return handler
        serializers: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(cast(UnaryHandler, handler.unary_unary), method), **serializers
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(cast(StreamHandler, handler.unary_stream), method), **serializers
            )
        return handler

    async def _before(self, decision: Decision, context: Context, method: str) -> None:
        if decision.kinds:
            log.warning(
                "fault injected", extra={"method": method, "kinds": ",".join(decision.kinds)}
            )
        if decision.delay:
            await asyncio.sleep(decision.delay)
        rule = decision.outcome
        if rule is None:
            return
        if rule.kind == "error":
            await context.abort(_CODES[rule.code], rule.message)
        if rule.kind == "crash" and rule.when == "before":
            self._injector.crash(rule, method)

    async def _after(self, decision: Decision, context: Context, method: str) -> None:
        rule = decision.outcome
        if rule is None:
            return
        if rule.kind == "crash" and rule.when == "after":
            self._injector.crash(rule, method)
        if rule.kind == "lost_reply":
            await context.abort(grpc.StatusCode.UNAVAILABLE, LOST_REPLY_MESSAGE)

    def _unary(self, inner: UnaryHandler, method: str) -> UnaryHandler:
        async def unary(request: Any, context: Context) -> Any:
            decision = self._injector.decide(method)
            await self._before(decision, context, method)
            try:
                response = await inner(request, context)
            except grpc.aio.AbortError:
                # The handler chose its status already; grpc allows one abort per call.
                await self._crash_after(decision, method)
                raise
            except Exception:
                # A failed handler's error reply is lost the same way as a success.
                await self._after(decision, context, method)
                raise
            await self._after(decision, context, method)
            return response

        return unary

    async def _crash_after(self, decision: Decision, method: str) -> None:
        rule = decision.outcome
        if rule is not None and rule.kind == "crash" and rule.when == "after":
            self._injector.crash(rule, method)

    def _stream(self, inner: StreamHandler, method: str) -> StreamHandler:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            decision = self._injector.decide(method)
            await self._before(decision, context, method)
            after = decision.outcome is not None and decision.outcome.kind != "error"
            if not after:
                async for item in inner(request, context):
                    yield item
                return
            items = inner(request, context)
            try:
                # The first message, or the end: the point an "after" fault applies.
                await anext(items, None)
            except grpc.aio.AbortError:
                await self._crash_after(decision, method)
                raise
            except Exception:
                await self._after(decision, context, method)
                raise
            finally:
                await cast(Any, items).aclose()
            await self._after(decision, context, method)

        return stream


def rule_from_proto(message: pb.FaultRule, index: int) -> Rule:
    """A rule of a SetFaults request, validated like one from the settings."""
    raw: dict[str, Any] = {"service": message.service, "method": message.method}
    kind = pb.FaultKind.Name(message.kind).removeprefix("FAULT_KIND_").lower()
    raw["kind"] = "" if kind == "unspecified" else kind
    if message.code or message.message:
        raw["code"] = message.code
    if message.message:
        raw["message"] = message.message
    if message.HasField("delay"):
        raw["seconds"] = message.delay.ToTimedelta().total_seconds()
    if message.when == pb.CRASH_WHEN_AFTER:
        raw["when"] = "after"
    trigger = message.WhichOneof("trigger")
    if trigger == "probability":
        raw["probability"] = message.probability
    elif trigger == "count":
        raw["count"] = message.count
    return parse_rule(raw, index)


def rule_to_proto(rule: Rule) -> pb.FaultRule:
    """The wire form of a rule."""
    message = pb.FaultRule(
        service=rule.service,
        method=rule.method,
        kind=pb.FaultKind.Value(f"FAULT_KIND_{rule.kind.upper()}"),
        code=rule.code,
        message=rule.message,
    )
    if rule.kind == "delay":
        delay = Duration()
        delay.FromNanoseconds(round(rule.seconds * 1e9))
        message.delay.CopyFrom(delay)
    if rule.kind == "crash":
        message.when = pb.CRASH_WHEN_AFTER if rule.when == "after" else pb.CRASH_WHEN_BEFORE
    if rule.probability is not None:
        message.probability = rule.probability
    if rule.count is not None:
        message.count = rule.count
    return message


class FaultServicer(pb_grpc.FaultServiceServicer):
    """SetFaults, ListFaults and ClearFaults over one injector; refused unless enabled."""

    def __init__(self, injector: Injector) -> None:
        self._injector = injector

    def _require_control(self) -> None:
        if not self._injector.control:
            raise FailedPrecondition(
                f"fault control is off; start the service with "
                f"{self._injector.control_variable}=true"
            )

    async def SetFaults(
        self, request: pb.SetFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SetFaultsResponse:
        self._require_control()
        try:
            rules = tuple(rule_from_proto(r, i) for i, r in enumerate(request.rules, start=1))
        except InvalidFaults as err:
            raise InvalidArgument(str(err)) from None
        self._injector.replace(Plan(rules, request.seed))
        return pb.SetFaultsResponse(rules=[rule_to_proto(rule) for rule in rules])

    async def ListFaults(
        self, request: pb.ListFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListFaultsResponse:
        self._require_control()
        return pb.ListFaultsResponse(
            seed=self._injector.seed,
            rules=[
                pb.FaultRuleStatus(rule=rule_to_proto(rule), fired=fired, remaining=remaining or 0)
                for rule, fired, remaining in self._injector.status()
            ],
        )

    async def ClearFaults(
        self, request: pb.ClearFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ClearFaultsResponse:
        self._require_control()
        return pb.ClearFaultsResponse(cleared=self._injector.clear())


def register(injector: Injector) -> Callable[[grpc.aio.Server], None]:
    """What `eventbooking.server.Service.register` calls to add the FaultService."""

    def add(server: grpc.aio.Server) -> None:
        pb_grpc.add_FaultServiceServicer_to_server(FaultServicer(injector), server)

    return add


def plan_from(text: str | None, path: Path | None) -> Plan:
    """The rule set of the settings: from the JSON text, or the file, or none."""
    if text is not None:
        return loads(text)
    if path is not None:
        return load_file(path)
    return Plan()
