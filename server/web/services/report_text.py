"""The evaluation's tables in the reader's language (issue 18).

server/evaluation/report.py writes Chinese only, on purpose: the XLSX the regulator reads, the JSON
and the signed snapshots of closed periods are Chinese, and a closed period's text must never
change. Pages translate at the edge instead, gettext-style: each phrase that code writes is a
`rep.*` key of the texts (server/web/texts/zh.toml holds it exactly as written, with `{name}` where
a figure or a name goes; en.toml the English). An English page maps every title, column label,
note, summary label and text cell through them; a placeholder's value is translated too when it
is itself a known phrase ("{label}（核验）" with label "运行机时"), otherwise kept (a name, a date).
A phrase the texts do not know stays as written, so a new one shows untranslated rather than not
at all (tests/web/test_every_page_translated.py fails on it).
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

from server.web.i18n import TEXT

PREFIX = "rep."
# placeholders that only ever hold a number (so "{indicator} {delta}" cannot match any spaced text)
_NUMERIC = {"delta": r"[-+]?\d[\d.,]*(?:e[-+]?\d+)?"}
_PLACEHOLDER = re.compile(r"{(\w+)}")


class Catalog:
    """Chinese phrase -> English: exact phrases, and patterns for those with placeholders."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.exact: dict[str, str] = {}
        patterns: list[tuple[int, re.Pattern[str], str]] = []
        for zh, en in pairs:
            if not _PLACEHOLDER.search(zh):
                self.exact.setdefault(zh, en)
                continue
            parts = _PLACEHOLDER.split(zh)  # literal, name, literal, name, ..., literal
            rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_NUMERIC.get(p, '.+?')})"
                         for i, p in enumerate(parts))
            literal = sum(len(p) for p in parts[::2])
            patterns.append((literal, re.compile(rx, re.S), en))
        # the most specific first: "{name}：共享方式：{mode}，未开放" before "{name}：共享方式：{mode}"
        self.patterns = [(rx, en) for _, rx, en in sorted(patterns, key=lambda p: -p[0])]
        self._memo: dict[str, str] = {}  # phrases repeat on every row

    def english(self, text: str) -> str:
        """`text` in English where the texts know it (recursively for placeholders), else as is."""
        if text not in self._memo:
            if len(self._memo) > 50_000:
                self._memo.clear()
            self._memo[text] = self._english(text)
        return self._memo[text]

    def _english(self, text: str) -> str:
        if text in self.exact:
            return self.exact[text]
        for rx, en in self.patterns:
            m = rx.fullmatch(text)
            if m:
                return en.format(**{k: self.english(v) for k, v in m.groupdict().items()})
        if "；" in text:  # a list joined by report code ("开放率 +0.1；利用率（仅核验数据） -0.05")
            parts = [self.english(p) for p in text.split("；")]
            if parts != text.split("；"):
                return "; ".join(parts)
        return text


@functools.cache
def catalog() -> Catalog:
    return Catalog([(zh, en) for key, (zh, en) in TEXT.items() if key.startswith(PREFIX)])


def text(lang: str, value: str) -> str:
    """One phrase of the evaluation's in `lang`."""
    return value if lang != "en" else catalog().english(value)


def report(rep: dict[str, Any], lang: str) -> dict[str, Any]:
    """A report's dict (Report.as_dict(), or a closed period's stored one) for a page in `lang`:
    titles, labels, notes and text cells translated; numbers, names and the dict's shape unchanged.
    Chinese pages get `rep` itself."""
    if lang != "en":
        return rep
    c = catalog()
    out = copy.deepcopy(rep)
    out["title"] = c.english(str(out.get("title", "")))
    for item in out.get("summary", {}).values():
        item["label"] = c.english(str(item["label"]))
        if isinstance(item.get("value"), str):
            item["value"] = c.english(item["value"])
    for table in out.get("tables", {}).values():
        table["title"] = c.english(str(table["title"]))
        table["notes"] = [c.english(str(n)) for n in table.get("notes", [])]
        texts = [col["key"] for col in table["columns"] if col["kind"] == "text"]
        for col in table["columns"]:
            col["label"] = c.english(str(col["label"]))
        for row in table["rows"]:
            for k in texts:
                if isinstance(row.get(k), str):
                    row[k] = c.english(row[k])
    for line in out.get("score_sheet", {}).get("lines", []):
        line["label"] = c.english(str(line["label"]))
    return out
