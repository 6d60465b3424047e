"""Conformance harness: run a JS SDK scenario against PocketBase and our runtime, normalise the
two traces and compare them.

A scenario (tests/js/conformance/*.mjs) is run by one node process against both engines at the
same time; what each engine answered is a *trace*:

    {"steps": [...],      # in order, one per request or computed value, labelled by "step":
                          #   {"step", "ok": value}                      the SDK call succeeded
                          #   {"step", "error": {"status", "response"}}  ClientResponseError
                          #   {"step", "status", "body"}                 a raw fetch
                          #   {"step", "note": value}                    computed by the scenario
     "surprises": [...],  # steps whose outcome the scenario did not expect
     "keep": [...],       # literal values the normaliser must leave alone (client-given ids)
     "aborted": "..."}    # only when the scenario could not go on

``normalise`` masks what legitimately differs between runs and engines; ``difference`` renders
two normalised traces as a readable report (None when they are equal); ``Conformance`` runs
scenarios once per set of engines and checks them (see ``Conformance.check``).

Mail: with ``Conformance(..., mail=True)`` every run gets a ``MailRelay``: one real SMTP server
(tests/support/smtp.py) per engine and a loopback HTTP endpoint through which the scenario, in
node, reads what its engine sent (``t.mail.settings()`` / ``await t.mail.wait({to, subject})``
in trace.mjs): the message with its OTP code and PocketBase tokens as read from the real mail.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conformance.oidc_relay import OidcRelay
from tests.support.engines import (
    Engine,
    EngineProcess,
    pocketfleet_runtime_available,
    start_engine,
)
from tests.support.smtp import ReceivedMail, SmtpServer, TokenAction, otp_code, pocketbase_token

EMAIL = "conformance@example.com"
PASSWORD = "conformance-pass-1"
REFERENCE: Engine = "pocketbase"
CANDIDATE: Engine = "pocketfleet"

JS_DIR = Path(__file__).resolve().parent.parent / "js"
RUNNER = JS_DIR / "conformance.mjs"
NODE_TIMEOUT_S = 150

Trace = dict[str, Any]
Json = Any

# Keys whose string values are generated identifiers (records, collections, fields).
ID_KEYS = frozenset({"id", "collectionId"})
# A record id as PocketBase makes them; other ids (collections, fields) are masked differently,
# so an id of the wrong shape still shows in a diff.
RECORD_ID = re.compile(r"[a-z0-9]{15}")
# Ids shorter than this are replaced only where they are a whole value, never inside text.
MIN_ID_IN_TEXT = 6
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# PocketBase's date-time format exactly: another format is left as it is, so it shows in a diff.
DATETIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}Z")
# Dates this close to the run are "now" (autodate fields, token times); scenarios use fixed
# dates far from it for their data.
NOW_WINDOW = timedelta(days=2)
# Go's JSON decoder words one type error two ways from run to run (its v1 "cannot unmarshal"
# and v2 "unable to unmarshal" messages); both read as the same error.
GO_JSON_WORDING = re.compile(r"json: unable to unmarshal")
# ... and shows the object it could not decode with its keys in map order (random): sorted here
GO_UNKNOWN_FIELD = re.compile(r"(missing or unknown field type in )(\{[^{}]*\})")


# --- running -------------------------------------------------------------------------------------


def node_command(
    scenario: str,
    targets: dict[str, str],
    mail: dict[str, Any] | None = None,
    oidc: dict[str, Any] | None = None,
) -> list[str]:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules").is_dir():
        raise AssertionError("node or tests/js/node_modules missing: run scripts/install-system.sh")
    config: dict[str, Any] = {"targets": targets, "email": EMAIL, "password": PASSWORD}
    if mail is not None:
        config["mail"] = mail
    if oidc is not None:
        config["oidc"] = oidc
    return [node, str(RUNNER), scenario, json.dumps(config)]


def run_scenario(
    scenario: str,
    targets: dict[str, str],
    mail: dict[str, Any] | None = None,
    oidc: dict[str, Any] | None = None,
) -> dict[str, Trace]:
    """Run ``scenario`` against every target ``{name: url}`` at once; the trace of each.
    ``mail`` is ``MailRelay.config()`` (each target's SMTP server and mailbox URL), ``oidc``
    ``OidcRelay.config()`` (oidc_relay.py: OpenID providers and the browser's part in Python)."""
    try:
        result = subprocess.run(
            node_command(scenario, targets, mail, oidc),
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"scenario {scenario} timed out after {NODE_TIMEOUT_S}s") from err
    if result.returncode != 0:
        raise AssertionError(f"scenario {scenario} crashed in node:\n{result.stderr.strip()}")
    traces: dict[str, Trace] = json.loads(result.stdout)
    return traces


def list_scenarios() -> list[str]:
    node = shutil.which("node")
    assert node is not None, "node is missing: run scripts/install-system.sh"
    result = subprocess.run(
        [node, str(RUNNER), "--list"], capture_output=True, text=True, timeout=60, check=True
    )
    names: list[str] = json.loads(result.stdout)
    return names


# --- mail ----------------------------------------------------------------------------------------

MAIL_WAIT_MAX_S = 30.0
TOKEN_ACTIONS: tuple[TokenAction, ...] = (
    "confirm-verification",
    "confirm-password-reset",
    "confirm-email-change",
)


def mail_json(mail: ReceivedMail) -> dict[str, Any]:
    """What a scenario gets of one received message: its addresses, subject and bodies, the OTP
    code and the PocketBase tokens (by link action) found in it."""
    tokens: dict[str, str] = {}
    for action in TOKEN_ACTIONS:
        with contextlib.suppress(ValueError):
            tokens[action] = pocketbase_token(mail, action)
    try:
        otp: str | None = otp_code(mail)
    except ValueError:
        otp = None
    return {
        "from": mail.sender,
        "fromName": mail.sender_name,
        "to": list(mail.to),
        "subject": mail.subject,
        "html": mail.html,
        "text": mail.text,
        "otp": otp,
        "tokens": tokens,
        "links": mail.links(),
    }


class MailRelay:
    """One SMTP server per target and one loopback HTTP server that hands their mail to node.

    ``GET /TARGET/wait?to=ADDRESS&subject=TEXT&timeout=SECONDS`` answers the oldest message of
    TARGET's server not handed out yet that matches (``SmtpServer.wait_for``) as ``mail_json``,
    or 408 when none arrives in time (so a scenario can also show that no mail was sent).
    """

    def __init__(self, targets: list[str]) -> None:
        self.servers = {target: SmtpServer() for target in targets}
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                target, _, action = url.path.strip("/").partition("/")
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                server = relay.servers.get(target)
                if server is None or action != "wait":
                    return self._answer(404, {"error": f"no mailbox {url.path}"})
                timeout = min(float(query.get("timeout", "10")), MAIL_WAIT_MAX_S)
                try:
                    mail = server.wait_for(
                        to=query.get("to"), subject_contains=query.get("subject"), timeout=timeout
                    )
                except TimeoutError as err:
                    return self._answer(408, {"error": str(err)})
                self._answer(200, mail_json(mail))

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def config(self) -> dict[str, Any]:
        """Per target: ``{"smtp": {"host", "port"}, "url": its mailbox}`` (for node)."""
        port = self._http.server_address[1]
        return {
            target: {
                "smtp": {"host": server.host, "port": server.port},
                "url": f"http://127.0.0.1:{port}/{target}",
            }
            for target, server in self.servers.items()
        }

    @classmethod
    @contextlib.contextmanager
    def running(cls, targets: list[str]) -> Iterator[MailRelay]:
        relay = cls(targets)
        with contextlib.ExitStack() as stack:
            for server in relay.servers.values():
                stack.enter_context(server)
            relay._thread.start()
            stack.callback(relay._http.server_close)
            stack.callback(relay._http.shutdown)
            yield relay


# --- normalising ---------------------------------------------------------------------------------


@dataclass
class _Masks:
    keep: frozenset[str]
    now: datetime
    ids: dict[str, str] = field(default_factory=dict)
    _pattern: re.Pattern[str] | None = None

    def learn_ids(self, value: Json, key: str | None = None) -> None:
        """Number the generated ids in order of appearance (keys visited sorted)."""
        if isinstance(value, dict):
            for k in sorted(value):
                self.learn_ids(value[k], k)
        elif isinstance(value, list):
            for item in value:
                self.learn_ids(item, key)
        elif (
            isinstance(value, str)
            and key in ID_KEYS
            and value
            and value not in self.keep
            and value not in self.ids
        ):
            kind = "id" if RECORD_ID.fullmatch(value) else "other-id"
            self.ids[value] = f"<{kind}{len(self.ids) + 1}>"

    def mask(self, value: Json) -> Json:
        if isinstance(value, dict):
            return {k: self.mask(value[k]) for k in sorted(value)}
        if isinstance(value, list):
            return [self.mask(item) for item in value]
        if isinstance(value, str):
            return self.mask_string(value)
        return value

    def mask_string(self, text: str) -> str:
        if text in self.keep:
            return text
        if text in self.ids:
            return self.ids[text]
        text = JWT.sub("<token>", text)
        text = GO_JSON_WORDING.sub("json: cannot unmarshal", text)
        text = GO_UNKNOWN_FIELD.sub(_sorted_object, text)
        text = DATETIME.sub(self._datetime, text)
        if self._pattern is None:
            ids = sorted((i for i in self.ids if len(i) >= MIN_ID_IN_TEXT), key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(i) for i in ids) or r"(?!)")
        return self._pattern.sub(lambda m: self.ids[m.group(0)], text)

    def _datetime(self, match: re.Match[str]) -> str:
        raw = match.group(0)
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return raw
        return "<now>" if abs(moment - self.now) < NOW_WINDOW else raw


def _sorted_object(match: re.Match[str]) -> str:
    try:
        value = json.loads(match.group(2))
    except ValueError:
        return match.group(0)
    return match.group(1) + json.dumps(value, sort_keys=True, separators=(",", ":"))


def normalise(trace: Trace, *, now: datetime | None = None) -> Trace:
    """``trace`` with ids, tokens and current times replaced by stable placeholders.

    Ids (strings under ``id``/``collectionId``) become ``<id1>``, ``<id2>``... in order of
    appearance (``<other-id3>`` when not shaped like a record id), everywhere they occur
    (relation values, messages), so relations between records are still compared. JWTs become
    ``<token>`` (whether two tokens are equal is for the scenario to check), date-times near the
    run ``<now>``. Object keys are sorted, so key order never counts. Values listed in ``keep``
    stay as they are.
    """
    masks = _Masks(keep=frozenset(trace.get("keep", [])), now=now or datetime.now(UTC))
    masks.learn_ids(trace.get("steps", []))
    result: Trace = {"steps": masks.mask(trace.get("steps", []))}
    if "aborted" in trace:
        result["aborted"] = masks.mask_string(str(trace["aborted"]))
    return result


# --- comparing -----------------------------------------------------------------------------------

MAX_STEP_DIFF_LINES = 80
MAX_REPORT_STEPS = 12


def _pretty(value: Json) -> list[str]:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _outcome(step: Json) -> str:
    if step is None:
        return "missing"
    if "error" in step:
        return f"error {step['error'].get('status')}"
    if "status" in step:
        return f"HTTP {step['status']}"
    if "note" in step:
        return "note"
    return "ok"


def difference(
    scenario: str,
    reference: Trace,
    candidate: Trace,
    names: tuple[str, str] = (REFERENCE, CANDIDATE),
) -> str | None:
    """A readable report of how two normalised traces differ, or None when they are equal."""
    if reference == candidate:
        return None
    ref_steps = {s["step"]: s for s in reference["steps"]}
    cand_steps = {s["step"]: s for s in candidate["steps"]}
    labels = list(ref_steps) + [label for label in cand_steps if label not in ref_steps]
    differing = [label for label in labels if ref_steps.get(label) != cand_steps.get(label)]
    lines = [
        f"scenario {scenario!r}: {names[1]} differs from {names[0]} in {len(differing)} of "
        f"{len(labels)} steps"
    ]
    for name, trace in zip(names, (reference, candidate), strict=True):
        if "aborted" in trace:
            lines.append(f"  {name} aborted the scenario: {trace['aborted']}")
    lines.append("  step outcomes (reference -> candidate):")
    for label in differing:
        before, after = _outcome(ref_steps.get(label)), _outcome(cand_steps.get(label))
        lines.append(f"    {label!r}: {before} -> {after}")
    for label in differing[:MAX_REPORT_STEPS]:
        lines.append("")
        lines.append(f"── step {label!r}")
        diff = list(
            difflib.unified_diff(
                _pretty(ref_steps.get(label)),
                _pretty(cand_steps.get(label)),
                fromfile=names[0],
                tofile=names[1],
                lineterm="",
                n=3,
            )
        )
        if len(diff) > MAX_STEP_DIFF_LINES:
            diff = [*diff[:MAX_STEP_DIFF_LINES], f"... ({len(diff) - MAX_STEP_DIFF_LINES} more)"]
        lines.extend(diff)
    if len(differing) > MAX_REPORT_STEPS:
        lines.append(f"... and {len(differing) - MAX_REPORT_STEPS} more differing steps")
    return "\n".join(lines)


def surprises_report(scenario: str, engine: str, trace: Trace) -> str | None:
    """What the scenario did not expect from ``engine`` (a broken scenario on PocketBase)."""
    problems = [
        f"  step {s['step']!r}: expected {s['expected']}, got {s['got']}"
        for s in trace.get("surprises", [])
    ]
    if "aborted" in trace:
        problems.append(f"  aborted: {trace['aborted']}")
    if not problems:
        return None
    return f"scenario {scenario!r} on {engine}:\n" + "\n".join(problems)


# --- the engines ---------------------------------------------------------------------------------


def start_engines(root: Path) -> tuple[dict[str, EngineProcess], dict[str, BaseException]]:
    """PocketBase and, once ``pocketfleet runtime`` can serve, our runtime, started in parallel
    on fresh folders under ``root``; the engines that came up and the errors of the others."""
    wanted: list[Engine] = [REFERENCE]
    if pocketfleet_runtime_available():
        wanted.append(CANDIDATE)
    with ThreadPoolExecutor(len(wanted)) as pool:
        futures = {e: pool.submit(start_engine, e, root / e, EMAIL, PASSWORD) for e in wanted}
    engines: dict[str, EngineProcess] = {}
    errors: dict[str, BaseException] = {}
    for engine, future in futures.items():
        try:
            engines[engine] = future.result()
        except Exception as err:
            errors[engine] = err
    return engines, errors


@dataclass
class Conformance:
    """Runs scenarios against both engines and checks the traces; each scenario runs once.

    Shared (the default): both engines start on the first scenario and serve every scenario
    until ``stop`` (scenarios keep apart by their collection names). Isolated: every scenario
    gets engines of its own, stopped as soon as it has run. With ``mail``, each run gets a
    ``MailRelay`` (see the module docstring), with ``oidc`` an ``OidcRelay`` (oidc_relay.py).
    A failure to start our runtime is reported by its own tests, never by PocketBase's.
    """

    root: Path
    isolated: bool = False
    mail: bool = False
    oidc: bool = False
    engines: dict[str, EngineProcess] = field(default_factory=dict, repr=False)
    start_errors: dict[str, dict[str, BaseException]] = field(default_factory=dict, repr=False)
    traces: dict[str, dict[str, Trace]] = field(default_factory=dict, repr=False)
    _started: bool = field(default=False, repr=False)

    def stop(self) -> None:
        for engine in self.engines.values():
            engine.stop()
        self.engines = {}

    def run(self, scenario: str) -> dict[str, Trace]:
        """The traces of ``scenario`` on every engine that is up (run on first use)."""
        if scenario in self.traces:
            return self.traces[scenario]
        if self.isolated:
            engines, self.start_errors[scenario] = start_engines(self._folder(scenario))
            try:
                self.traces[scenario] = self._run(scenario, engines)
            finally:
                for engine in engines.values():
                    engine.stop()
        else:
            if not self._started:
                self.engines, self.start_errors["*"] = start_engines(self.root)
                self._started = True
            self.traces[scenario] = self._run(scenario, self.engines)
        return self.traces[scenario]

    def _folder(self, scenario: str) -> Path:
        """Where the engines serving ``scenario`` keep their folders (and logs)."""
        return self.root / scenario if self.isolated else self.root

    def _run(self, scenario: str, engines: dict[str, EngineProcess]) -> dict[str, Trace]:
        if REFERENCE not in engines:
            return {}
        targets = {name: e.url for name, e in engines.items()}
        with contextlib.ExitStack() as stack:
            mail = stack.enter_context(MailRelay.running(list(targets))) if self.mail else None
            oidc = stack.enter_context(OidcRelay.running()) if self.oidc else None
            traces = run_scenario(
                scenario,
                targets,
                mail.config() if mail is not None else None,
                oidc.config() if oidc is not None else None,
            )
        folder = self.root / "traces"
        folder.mkdir(exist_ok=True)
        for name, trace in traces.items():
            text = json.dumps(normalise(trace), indent=2, sort_keys=True, ensure_ascii=False)
            (folder / f"{scenario}.{name}.json").write_text(text)
        return traces

    def _trace(self, scenario: str, engine: str) -> Trace:
        traces = self.run(scenario)
        if engine not in traces:
            errors = self.start_errors.get(scenario if self.isolated else "*", {})
            reason = errors.get(engine, "the reference did not start")
            pytest.fail(f"{engine} did not start: {reason}", pytrace=False)
        return traces[engine]

    def check(self, scenario: str, engine: str) -> None:
        """PocketBase: the scenario ran as it expects. Our runtime: same trace as PocketBase."""
        trace = self._trace(scenario, engine)
        if engine == REFERENCE:
            report = surprises_report(scenario, engine, trace)
            if report:
                pytest.fail(f"the scenario does not hold on PocketBase:\n{report}", pytrace=False)
            return
        reference = self._trace(scenario, REFERENCE)
        report = difference(scenario, normalise(reference), normalise(trace), (REFERENCE, engine))
        if report:
            paths = f"{self.root}/traces/{scenario}.{{{REFERENCE},{engine}}}.json"
            log = self._folder(scenario) / engine / f"{engine}.log"
            pytest.fail(
                f"{report}\n\nfull normalised traces: {paths}\n{engine} log: {log}"
                f"{self._death(engine)}",
                pytrace=False,
            )

    def _death(self, engine: str) -> str:
        """The end of the log of a shared engine that has died, else nothing."""
        running = self.engines.get(engine)
        if running is None or running.process.poll() is None:
            return ""
        return f"\n{engine} EXITED with {running.process.returncode}:\n{running.log_tail()}"
