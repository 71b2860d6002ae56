"""The user-facing texts (server/web/texts/zh.toml and en.toml): every key in both languages, with
the same placeholders, Chinese really Chinese; a file missing a key is refused when loaded."""

from __future__ import annotations

import re
import string
import tomllib
from pathlib import Path

import pytest

from server.web import i18n

TEXTS = Path(i18n.__file__).parent / "texts"


def _load(lang: str) -> dict[str, str]:
    return tomllib.loads((TEXTS / f"{lang}.toml").read_text(encoding="utf-8"))


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_exists_in_both_languages() -> None:
    zh, en = _load("zh"), _load("en")
    assert sorted(set(zh) - set(en)) == [] and sorted(set(en) - set(zh)) == []
    assert all(isinstance(v, str) and v.strip() for v in [*zh.values(), *en.values()])
    assert i18n.TEXT == {k: (zh[k], en[k]) for k in zh}


def test_both_languages_take_the_same_placeholders() -> None:
    zh, en = _load("zh"), _load("en")
    assert {k: _fields(zh[k]) for k in zh if _fields(zh[k]) != _fields(en[k])} == {}


def test_chinese_comes_first() -> None:
    """Chinese texts are Chinese, not English left untranslated. (The language switch, `nav.lang`,
    names the other language in that language: "English" on a Chinese page.)"""
    zh = _load("zh")
    bare = {k: re.sub(r"\{[^}]*\}", "", v) for k, v in zh.items() if k != "nav.lang"}
    latin_only = [k for k, v in bare.items() if re.search(r"[A-Za-z]{4,}", v) and not re.search(r"[\u3000-\u9fff]", v)]
    assert latin_only == []
    assert zh["nav.lang"] == "English" and _load("en")["nav.lang"] == "中文"


def test_a_missing_translation_is_refused(tmp_path: Path) -> None:
    (tmp_path / "zh.toml").write_text('"a" = "甲"\n"b" = "乙"\n', encoding="utf-8")
    (tmp_path / "en.toml").write_text('"a" = "A"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="b"):
        i18n.load_texts(tmp_path)
