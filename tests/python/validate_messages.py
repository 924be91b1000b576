#!/usr/bin/env python3
"""Validate Airbyte protocol output, one JSON message a line, with Airbyte's own models.

Every line must parse with both of the models Airbyte's Python tooling uses:
  * airbyte-cdk's `AirbyteMessageSerializer` (serpyco-rs dataclasses), and
  * `airbyte_protocol.models.AirbyteMessage` (pydantic v2), which PyAirbyte uses to read
    a connector's stdout.
On top of that it checks what the models leave optional but the protocol requires: the
payload named by `type` is present, records name a stream and carry an object, state
messages are well formed, and (with flags) what a given command must print.

    validate_messages.py [options] [FILE ...]        (no FILE, or "-", reads stdin)

Exit status 0 when every line is valid and every expectation holds, 1 otherwise. A summary
(count per message type, records per stream) is printed to stderr, or as JSON with
--summary-json FILE.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from airbyte_cdk.models import AirbyteMessageSerializer
from airbyte_protocol.models import AirbyteMessage as PydanticAirbyteMessage

# type -> the key its payload lives under
PAYLOAD_KEY = {
    "RECORD": "record",
    "STATE": "state",
    "LOG": "log",
    "SPEC": "spec",
    "CONNECTION_STATUS": "connectionStatus",
    "CATALOG": "catalog",
    "TRACE": "trace",
    "CONTROL": "control",
}
MAX_ERRORS_SHOWN = 20


@dataclass
class Report:
    """What one validation run saw."""

    lines: int = 0
    types: Counter = field(default_factory=Counter)
    records: Counter = field(default_factory=Counter)
    statuses: list[str] = field(default_factory=list)
    trace_errors: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # the last state message per stream (or the last global/legacy one), as the platform keeps it
    last_states: dict[str, dict] = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)

    def error(self, msg: str) -> None:
        self.errors.append(msg)

    def by_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m.get("type") == kind]

    def state_for_next_read(self) -> list[dict]:
        """The input state a platform would hand to the next `read`: a list of state messages."""
        return list(self.last_states.values())

    def summary(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "types": dict(sorted(self.types.items())),
            "records_per_stream": dict(sorted(self.records.items())),
            "connection_status": self.statuses,
            "errors": len(self.errors),
        }


def _check_payload(msg: dict, where: str, rep: Report) -> None:
    kind = msg.get("type")
    key = PAYLOAD_KEY.get(kind)
    if key is None:
        rep.error(f"{where}: unknown message type {kind!r}")
        return
    payload = msg.get(key)
    if not isinstance(payload, dict):
        rep.error(f"{where}: type {kind} but no {key!r} object")
        return
    if kind == "RECORD":
        if not payload.get("stream"):
            rep.error(f"{where}: RECORD without a stream name")
        if not isinstance(payload.get("data"), dict):
            rep.error(f"{where}: RECORD data is not an object")
        if not isinstance(payload.get("emitted_at"), int):
            rep.error(f"{where}: RECORD emitted_at is not an integer (epoch milliseconds)")
        rep.records[payload.get("stream", "?")] += 1
    elif kind == "STATE":
        stype = payload.get("type", "LEGACY")
        if stype == "STREAM":
            stream = payload.get("stream") or {}
            desc = stream.get("stream_descriptor") or {}
            if not desc.get("name"):
                rep.error(f"{where}: STREAM state without stream_descriptor.name")
            if "stream_state" in stream and not isinstance(stream["stream_state"], dict):
                rep.error(f"{where}: stream_state is not an object")
            key_name = f"stream:{desc.get('namespace') or ''}:{desc.get('name')}"
        elif stype == "GLOBAL":
            if not isinstance(payload.get("global"), dict):
                rep.error(f"{where}: GLOBAL state without a global object")
            key_name = "global"
        else:
            if "data" not in payload:
                rep.error(f"{where}: LEGACY state without data")
            key_name = "legacy"
        rep.last_states[key_name] = payload
    elif kind == "CONNECTION_STATUS":
        status = payload.get("status")
        if status not in ("SUCCEEDED", "FAILED"):
            rep.error(f"{where}: connectionStatus.status is {status!r}")
        rep.statuses.append(status)
    elif kind == "SPEC":
        cs = payload.get("connectionSpecification")
        if not isinstance(cs, dict) or cs.get("type") != "object":
            rep.error(f"{where}: spec.connectionSpecification is not an object schema")
    elif kind == "CATALOG":
        names = [s.get("name") for s in payload.get("streams", [])]
        if not names:
            rep.error(f"{where}: catalog has no streams")
        if len(names) != len(set(names)):
            rep.error(f"{where}: catalog has duplicate stream names {names}")
        for s in payload.get("streams", []):
            if not isinstance(s.get("json_schema"), dict):
                rep.error(f"{where}: stream {s.get('name')} has no json_schema object")
            if not s.get("supported_sync_modes"):
                rep.error(f"{where}: stream {s.get('name')} has no supported_sync_modes")
    elif kind == "TRACE":
        if payload.get("type") == "ERROR":
            rep.trace_errors.append(payload.get("error") or {})
    elif kind == "LOG":
        if payload.get("level") not in ("FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"):
            rep.error(f"{where}: LOG level {payload.get('level')!r}")


def validate_lines(lines: Iterable[tuple[str, int, str]], rep: Report | None = None) -> Report:
    """Validate (source, line number, text) triples; returns the report."""
    rep = rep or Report()
    for source, lineno, raw in lines:
        line = raw.strip()
        where = f"{source}:{lineno}"
        if not line:
            continue
        rep.lines += 1
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as e:
            rep.error(f"{where}: not JSON ({e}): {line[:200]}")
            continue
        if not isinstance(msg, dict):
            rep.error(f"{where}: not a JSON object: {line[:200]}")
            continue
        try:
            AirbyteMessageSerializer.load(msg)
        except Exception as e:  # serpyco-rs raises its own SchemaValidationError
            rep.error(f"{where}: airbyte-cdk rejects it: {e}: {line[:300]}")
            continue
        try:
            PydanticAirbyteMessage.model_validate_json(line)
        except Exception as e:
            rep.error(f"{where}: airbyte_protocol (pydantic) rejects it: {e}: {line[:300]}")
            continue
        rep.types[msg.get("type")] += 1
        rep.messages.append(msg)
        _check_payload(msg, where, rep)
    return rep


def read_sources(paths: list[str]) -> Iterable[tuple[str, int, str]]:
    for path in paths or ["-"]:
        if path == "-":
            for n, line in enumerate(sys.stdin, 1):
                yield "<stdin>", n, line
        else:
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    yield path, n, line


def check_expectations(rep: Report, args: argparse.Namespace) -> None:
    for kind in args.expect_type or []:
        if rep.types.get(kind, 0) == 0:
            rep.error(f"expected at least one {kind} message, saw none")
    if args.only_types:
        allowed = set(args.only_types.split(","))
        extra = {t for t in rep.types if t not in allowed}
        if extra:
            rep.error(f"message types {sorted(extra)} not allowed here (allowed: {sorted(allowed)})")
    for kind in args.expect_one or []:
        if rep.types.get(kind, 0) != 1:
            rep.error(f"expected exactly one {kind} message, saw {rep.types.get(kind, 0)}")
    if args.expect_status:
        if rep.statuses != [args.expect_status]:
            rep.error(f"expected connection status {args.expect_status}, saw {rep.statuses}")
    if args.expect_records_for:
        for stream in args.expect_records_for.split(","):
            if rep.records.get(stream, 0) == 0:
                rep.error(f"expected RECORD messages for stream {stream!r}, saw none")
    if args.catalog:
        with open(args.catalog, encoding="utf-8") as f:
            configured = {s["stream"]["name"] for s in json.load(f)["streams"]}
        stray = set(rep.records) - configured
        if stray:
            rep.error(f"records for streams not in the configured catalog: {sorted(stray)}")
    if args.expect_state:
        if rep.types.get("STATE", 0) == 0:
            rep.error("expected STATE messages, saw none")
    if args.no_trace_errors and rep.trace_errors:
        rep.error(f"TRACE ERROR messages: {json.dumps(rep.trace_errors)[:500]}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="JSON-lines files; none or '-' reads stdin")
    p.add_argument("--expect-type", action="append", metavar="TYPE",
                   help="at least one message of TYPE (repeatable)")
    p.add_argument("--expect-one", action="append", metavar="TYPE",
                   help="exactly one message of TYPE (repeatable)")
    p.add_argument("--only-types", metavar="T1,T2", help="no message types besides these")
    p.add_argument("--expect-status", choices=["SUCCEEDED", "FAILED"],
                   help="exactly one CONNECTION_STATUS, with this status")
    p.add_argument("--expect-records-for", metavar="S1,S2", help="RECORDs for each of these streams")
    p.add_argument("--expect-state", action="store_true", help="at least one STATE message")
    p.add_argument("--catalog", metavar="FILE", help="records only for streams of this configured catalog")
    p.add_argument("--no-trace-errors", action="store_true", help="fail on TRACE messages of type ERROR")
    p.add_argument("--summary-json", metavar="FILE", help="write the summary as JSON")
    p.add_argument("--state-out", metavar="FILE",
                   help="write the last state per stream, as the next read's --state input")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rep = validate_lines(read_sources(args.files))
    check_expectations(rep, args)
    summary = rep.summary()
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    if args.state_out:
        with open(args.state_out, "w", encoding="utf-8") as f:
            json.dump(rep.state_for_next_read(), f, indent=2)
    for e in rep.errors[:MAX_ERRORS_SHOWN]:
        print(f"INVALID {e}", file=sys.stderr)
    if len(rep.errors) > MAX_ERRORS_SHOWN:
        print(f"... and {len(rep.errors) - MAX_ERRORS_SHOWN} more errors", file=sys.stderr)
    if not args.quiet or rep.errors:
        label = ", ".join(args.files) if args.files else "<stdin>"
        types = " ".join(f"{k}={v}" for k, v in sorted(rep.types.items())) or "none"
        print(f"{label}: {rep.lines} lines; types: {types}", file=sys.stderr)
        if rep.records:
            per = " ".join(f"{k}={v}" for k, v in sorted(rep.records.items()))
            print(f"  records per stream: {per}", file=sys.stderr)
        if rep.statuses:
            print(f"  connection status: {', '.join(map(str, rep.statuses))}", file=sys.stderr)
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
