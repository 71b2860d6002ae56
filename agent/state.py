"""Detector verdicts -> the instrument's state, debounced.

The rule language is deliberately tiny: detector terms joined by `and`, `or`, `not` and
parentheses. A term is `<detector>` (same as `<detector>.running`) or `<detector>.<predicate>`
with predicate running | on | idle | off | fault. Logic is three-valued (Kleene): a detector
that cannot tell (verdict `unknown`) makes its terms unknown, so an error can never produce a
fake `running`; `running or X` is still true when the other side is.

Combining, per poll:
  running rule true                     -> running
  else any detector reports fault       -> fault
  else running rule unknown             -> unknown
  else the `on` rule (default: any power-sensing detector is on) -> idle / off / unknown

Debounce (`StateMachine`): a new state is adopted only after it held for `confirm_s`; running
ends only after the running signal has been absent for `post_run_s` (a dip shorter than that
is part of the run). Those are when the agent *decides* (the state record's `t`); every
transition also carries the *true edge*, the first poll that showed the change, and `since`
(where the server starts the new state, protocols/SPEC.md §5.2):
  start of running  since = edge = the first poll of the confirmed running signal, or earlier
                    by the warm-up: when the optional `warmup` rule held just before the run,
                    the start of the warm-up, at most `warmup_max_s` before
  end of running    since = edge = the first poll after the last running one: the hold and the
                    confirmation that end in "still stopped" add no running time. A detector
                    that cannot tell (`unknown`: a dead link) gets no hold: once that held for
                    `confirm_s` the run ends where the link died (a shorter blip is part of it).
                    Only post-processing the detectors cannot see and the lab declares
                    (`post_credit_s`, at most `post_run_s`) is added after the edge: since =
                    edge + credit, and the evidence says so (`post_ms`)
  other changes     since = edge = the first poll of the confirmed new state
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.detectors.base import Observation, Verdict

PREDICATES = ("running", "on", "idle", "off", "fault")
Tri = bool | None


class RuleError(ValueError):
    pass


# ---- rules -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\()|(\))|([a-z][a-z0-9_]*(?:\.[a-z]+)?))")


@dataclass(frozen=True)
class Rule:
    text: str
    fn: Callable[[Mapping[str, Observation]], Tri]
    names: frozenset[str]

    def __call__(self, obs: Mapping[str, Observation]) -> Tri:
        return self.fn(obs)


def term_value(verdict: Verdict, predicate: str) -> Tri:
    """Truth of `<detector>.<predicate>` for a verdict; None when the detector cannot tell."""
    if verdict == "unknown":
        return None
    if verdict == "fault":
        return {"fault": True, "on": True, "off": False}.get(predicate)
    if predicate == "on":
        return verdict in ("idle", "running")
    if predicate == "fault":
        return False
    return verdict == predicate


def _and(a: Tri, b: Tri) -> Tri:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def _or(a: Tri, b: Tri) -> Tri:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def parse_rule(text: str, known: Iterable[str]) -> Rule:
    """Compile a rule; RuleError names the unknown detector or the syntax problem."""
    known = set(known)
    tokens: list[str] = []
    pos = 0
    text_s = text.strip()
    while pos < len(text_s):
        m = _TOKEN.match(text_s, pos)
        if not m or m.end() == pos:
            raise RuleError(f"cannot read the rule {text!r} at {text_s[pos:pos + 12]!r}")
        tokens.append(m.group(0).strip())
        pos = m.end()
        while pos < len(text_s) and text_s[pos].isspace():
            pos += 1
    if not tokens:
        raise RuleError("empty rule")
    names: set[str] = set()
    i = 0

    def peek() -> str | None:
        return tokens[i] if i < len(tokens) else None

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise RuleError(f"rule {text!r} ends too early")
        i += 1
        return tokens[i - 1]

    Fn = Callable[[Mapping[str, Observation]], Tri]

    def expr() -> Fn:
        left = conj()
        while peek() == "or":
            take()
            right = conj()
            left = (lambda a, b: lambda o: _or(a(o), b(o)))(left, right)
        return left

    def conj() -> Fn:
        left = neg()
        while peek() == "and":
            take()
            right = neg()
            left = (lambda a, b: lambda o: _and(a(o), b(o)))(left, right)
        return left

    def neg() -> Fn:
        if peek() == "not":
            take()
            inner = neg()
            return lambda o: None if (v := inner(o)) is None else not v
        return atom()

    def atom() -> Fn:
        tok = take()
        if tok == "(":
            inner = expr()
            if take() != ")":
                raise RuleError(f"missing ')' in rule {text!r}")
            return inner
        if tok in (")", "and", "or", "not"):
            raise RuleError(f"unexpected {tok!r} in rule {text!r}")
        det, _, pred = tok.partition(".")
        pred = pred or "running"
        if det not in known:
            raise RuleError(f"rule {text!r} names detector {det!r}, which is not configured "
                            f"(configured: {sorted(known)})")
        if pred not in PREDICATES:
            raise RuleError(f"rule {text!r}: {tok!r} has predicate {pred!r}; use one of {list(PREDICATES)}")
        names.add(det)

        def term(o: Mapping[str, Observation]) -> Tri:
            ob = o.get(det)
            return None if ob is None else term_value(ob.verdict, pred)

        return term

    fn = expr()
    if i != len(tokens):
        raise RuleError(f"unexpected {tokens[i]!r} in rule {text!r}")
    return Rule(text=text, fn=fn, names=frozenset(names))


def default_on_rule(power_sensing: Iterable[str], all_names: Iterable[str]) -> str:
    names = sorted(power_sensing) or sorted(all_names)
    return " or ".join(f"{n}.on" for n in names)


def compile_rules(running: str, on: str, warmup: str, detectors: Iterable[Any]) -> tuple[Rule, Rule, Rule | None]:
    """The running, on and warm-up rules of a config; `on` defaults to any power-sensing detector on."""
    dets = list(detectors)
    names = [d.name for d in dets]
    on_text = on or default_on_rule([d.name for d in dets if d.senses_power], names)
    return (parse_rule(running, names), parse_rule(on_text, names),
            parse_rule(warmup, names) if warmup else None)


def combine(obs: Mapping[str, Observation], running: Rule, on: Rule) -> Verdict:
    r = running(obs)
    if r is True:
        return "running"
    if any(o.verdict == "fault" for o in obs.values()):
        return "fault"
    if r is None:
        return "unknown"
    powered = on(obs)
    if powered is True:
        return "idle"
    if powered is False:
        return "off"
    return "unknown"


# ---- debounce ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    state: Verdict
    prev_state: Verdict
    since: int  # UTC ms when the new state began for the server: `edge`, minus any warm-up credit
    raw_since: int  # UTC ms of the first poll of the confirmed candidate state
    warmup_ms: int
    edge: int | None = None  # UTC ms of the true edge: the first poll that showed the change
    post_ms: int = 0  # end of running: declared post-processing credit after the edge (`post_credit_s`)


class StateMachine:
    """Hysteresis over time: minimum durations before a change, a hold after running."""

    def __init__(self, running: Rule, on: Rule, warmup: Rule | None, confirm_ms: int, post_run_ms: int,
                 warmup_max_ms: int, post_credit_ms: int = 0) -> None:
        self.running_rule = running
        self.on_rule = on
        self.warmup_rule = warmup
        self.confirm_ms = confirm_ms
        self.post_run_ms = post_run_ms
        self.warmup_max_ms = warmup_max_ms
        self.post_credit_ms = min(post_credit_ms, post_run_ms)
        self.state: Verdict = "unknown"
        self.raw: Verdict = "unknown"
        self.entered_mono = 0
        self._candidate: tuple[Verdict, int, int] | None = None  # state, t, mono
        self._last_running_mono: int | None = None
        self._stop_edge: int | None = None  # t of the first poll after the last running one
        self._warmup_start: tuple[int, int] | None = None  # t, mono

    def update(self, obs: Mapping[str, Observation], t: int, mono: int) -> Transition | None:
        raw = combine(obs, self.running_rule, self.on_rule)
        self.raw = raw
        if self.warmup_rule is not None and self.state != "running":
            if self.warmup_rule(obs) is True or raw == "running":
                if self._warmup_start is None:
                    self._warmup_start = (t, mono)
            else:
                self._warmup_start = None
        if raw == "running":
            self._last_running_mono = mono
            self._stop_edge = None
        elif self.state == "running" and self._stop_edge is None:
            self._stop_edge = t
        if raw == self.state:
            self._candidate = None
            return None
        if self.state == "running" and raw != "unknown" and self._last_running_mono is not None \
                and mono - self._last_running_mono < self.post_run_ms:
            self._candidate = None
            return None  # the post-run hold: a dip shorter than post_run_s is part of the run
        if self._candidate is None or self._candidate[0] != raw:
            self._candidate = (raw, t, mono)
        cand, cand_t, cand_mono = self._candidate
        if mono - cand_mono < self.confirm_ms:
            return None
        prev = self.state
        edge = since = cand_t
        warmup_ms = post_ms = 0
        if prev == "running":
            # the run really ended at the first poll without the running signal; the hold and
            # the confirmation only delayed the decision
            edge = since = self._stop_edge if self._stop_edge is not None else cand_t
            self._stop_edge = None
            if cand != "unknown" and self.post_credit_ms:  # declared invisible post-processing
                since = min(edge + self.post_credit_ms, t)
                post_ms = since - edge
        elif cand == "running" and self._warmup_start is not None:
            w_t, _w_mono = self._warmup_start
            start_t = max(w_t, cand_t - self.warmup_max_ms, t - (mono - self.entered_mono))
            if start_t < cand_t:
                since = start_t
                warmup_ms = cand_t - start_t
        self.state = cand
        self.entered_mono = mono
        self._candidate = None
        self._warmup_start = None
        return Transition(state=cand, prev_state=prev, since=since, raw_since=cand_t, warmup_ms=warmup_ms, edge=edge,
                          post_ms=post_ms)
