"""Filling a registry form (form.html) in the browser as a person would, then saving it."""

from __future__ import annotations

from typing import Any


def fill_form(page: Any, texts: dict[str, str], selects: dict[str, str]) -> None:
    """Type `texts` into the inputs and pick `selects` by value; submit; the form goes on by itself."""
    page.wait_for_selector("#registry-form")
    for name, value in texts.items():
        page.fill(f"#registry-form [name='{name}']", value)
    for name, value in selects.items():
        page.select_option(f"#registry-form select[name='{name}']", value)
    page.click("#form-submit")
