"""Every page in both languages (issue 18): a Chinese page shows no English sentence of the texts
and no raw text key; an English page shows Chinese only where it is data (names, places, the
regulation's stored terms). Every GET page route is walked: a new page without a sample path here
fails the test, so it is walked too."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from server.registry import schema
from server.web.i18n import TEXT
from server.web.pages import alerts, bookings, checkin, main, ops, registry, setup
from tests.web.conftest import Web

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")  # ideographs (punctuation is not text)
PREFIXES = {k.split(".", 1)[0] for k in TEXT}
RAW_KEY = re.compile(r"\b(?:" + "|".join(sorted(PREFIXES)) + r")\.[a-z0-9_]+(?:\.[a-z0-9_]+)*\b")
SKIP_TAGS = {"script", "style", "code", "pre", "textarea"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Visible(HTMLParser):
    """The text a reader sees, without scripts, code and elements marked as another language."""

    def __init__(self, lang: str) -> None:
        super().__init__()
        self.lang = lang
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, hidden)
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        a = dict(attrs)
        hidden = (bool(self.stack) and self.stack[-1][1]) or tag in SKIP_TAGS or (
            a.get("lang") not in (None, self.lang, "zh-CN" if self.lang == "zh" else "en"))
        self.stack.append((tag, hidden))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not (self.stack and self.stack[-1][1]) and data.strip():
            self.out.append(data.strip())


def visible(html: str, lang: str) -> str:
    p = _Visible(lang)
    p.feed(html)
    return "\n".join(p.out)


def _routes() -> list[str]:
    paths = []
    for module in (main, registry, setup, ops, alerts, bookings, checkin):
        for r in module.router.routes:
            if "GET" in getattr(r, "methods", set()):
                paths.append(r.path)
    return sorted(set(paths))


def _data_corpus(web: Web) -> str:
    tables = ("organisations", "units", "instruments", "platform_users", "service_records", "price_list",
              "identity_map", "service_cases", "instrument_exemptions", "web_accounts", "coverage")
    parts = [str(v) for t in tables for (v,) in web.sql(f"SELECT row_to_json(x)::text FROM {t} x")]
    for table in schema.TABLES:
        for f in table.fields:
            parts += [str(v) for v in f.enum]
    return "\n".join(parts)


def _samples(web: Web) -> dict[str, list[str]]:
    ops = web.as_("ops")
    r = ops.post("/api/v1/instruments/ua-xrd/prices", json={"item": "物相分析", "basis": "per_sample",
                                                             "internal_price": "80", "valid_from": "2025-01-01"})
    assert r.status_code == 201, r.text
    (record,), = web.sql("SELECT id FROM service_records LIMIT 1")
    return {"instrument_id": ["ua-xrd"], "unit_id": ["ua"], "person_id": ["p-zhang"], "price_id": [str(r.json()["id"])],
            "record_id": [str(record)], "org_id": ["org-a"], "what": ["exemptions", "cases", "imports"],
            "code": ["NOPE0000"], "channel_id": ["1"]}


def _expand(path: str, samples: dict[str, list[str]]) -> list[str]:
    names = re.findall(r"{(\w+)}", path)
    out = [path]
    for n in names:
        assert n in samples, f"no sample value for {{{n}}} of {path}: add one to _samples"
        out = [p.replace("{" + n + "}", v) for p in out for v in samples[n]]
    return out


def test_every_page_in_both_languages(web: Web) -> None:
    samples = _samples(web)
    corpus = _data_corpus(web)
    en_sentences = {pair[1] for pair in TEXT.values() if pair[0] != pair[1] and " " in pair[1]
                    and len(pair[1]) >= 12 and "{" not in pair[1]}
    ops = web.as_("ops")
    problems: list[str] = []
    walked = 0
    # the evaluation pages also for the seed's year, where its service record, sessions and findings are
    extra = {"/units/{unit_id}/report": ["/units/ua/report?year=2025"], "/overview": ["/overview?year=2025"]}
    for route in _routes():
        if route in ("/", "/logout"):
            continue
        for path in _expand(route, samples) + extra.get(route, []):
            for lang in ("zh", "en"):
                sep = "&" if "?" in path else "?"
                r = ops.get(f"{path}{sep}lang={lang}", follow_redirects=True)
                assert r.status_code < 500, (path, lang, r.status_code)
                if "text/html" not in r.headers.get("content-type", ""):
                    continue
                walked += 1
                text = visible(r.text, lang)
                problems += [f"{path} [{lang}] raw key {m.group(0)!r}" for m in RAW_KEY.finditer(text)]
                if lang == "zh":
                    problems += [f"{path} [zh] English text {s!r}" for s in en_sentences if s in text]
                else:
                    problems += [f"{path} [en] Chinese text {run!r}" for run in set(CJK.findall(text))
                                 if run not in corpus]
    assert walked >= 2 * len(_routes()) - 4
    assert not problems, "\n".join(sorted(set(problems)))
