"""User-facing text, Chinese first (the regulation's terms) with English beside it.

One table for pages and API error messages, so the two never drift; the texts themselves are data,
server/web/texts/zh.toml and en.toml, key for key. The language is the `lang`
cookie (set by the switch, `?lang=en`), else the first supported Accept-Language, else Chinese.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from starlette.requests import Request

LANGS = ("zh", "en")

_TEXTS = Path(__file__).parent / "texts"


def load_texts(folder: Path = _TEXTS) -> dict[str, tuple[str, str]]:
    """key -> (Chinese, English) from texts/zh.toml and texts/en.toml; a key missing from either
    language stops the process here rather than showing a raw key to someone later."""
    zh, en = (tomllib.loads((folder / f"{lang}.toml").read_text(encoding="utf-8")) for lang in LANGS)
    missing = sorted(set(zh) ^ set(en))
    if missing:
        raise ValueError(f"texts missing in one language: {', '.join(missing)}")
    return {key: (str(zh[key]), str(en[key])) for key in zh}


# key -> (Chinese, English). Placeholders use str.format names.
TEXT: dict[str, tuple[str, str]] = load_texts()


def t(lang: str, key: str, **params: object) -> str:
    """The text of `key` in `lang`; an unknown key shows itself, so a gap is visible, not fatal."""
    pair = TEXT.get(key)
    if pair is None:
        return key
    text = pair[1] if lang == "en" else pair[0]
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError):
            return text
    return text


def t_or(lang: str, key: str, fallback: str) -> str:
    """The text of `key` in `lang`, or `fallback` (e.g. a raw code) where the table has no such key."""
    return t(lang, key) if key in TEXT else fallback


def both(key: str, **params: object) -> str:
    """Chinese then English, for logs and places without a request (e.g. the agent's enrolment)."""
    return f"{t('zh', key, **params)} / {t('en', key, **params)}"


def request_lang(request: Request, default: str = "zh") -> str:
    """`?lang=` first (the switch), then the cookie, then (API only) Accept-Language, then the default.

    Pages ignore Accept-Language on purpose: the product is Chinese first, and officials' browsers
    often say English; the switch is one click and sticks.
    """
    q = request.query_params.get("lang")
    if q in LANGS:
        return q
    c = request.cookies.get("lang")
    if c in LANGS:
        return c
    if request.url.path.startswith("/api/"):
        for part in request.headers.get("accept-language", "").lower().split(","):
            tag = part.split(";")[0].strip()
            if tag.startswith("zh"):
                return "zh"
            if tag.startswith("en"):
                return "en"
    return default
