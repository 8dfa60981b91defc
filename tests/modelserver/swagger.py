"""Driving a model server's Swagger UI in Chromium: "Try it out" on iris's predict."""

from __future__ import annotations

import json
from typing import Any

from playwright.sync_api import Page, expect

PREDICT = "/v2/models/iris/predict/"
MEASUREMENTS = {
    "sepal_length": "5.1",
    "sepal_width": "3.5",
    "petal_length": "1.4",
    "petal_width": "0.2",
}


def try_predict(page: Page) -> dict[str, Any]:
    """Open iris's predict operation on the page, fill in a setosa flower, execute; the answer
    (HTTP 200, shown on the page) as JSON."""
    operation = page.locator(".opblock").filter(
        has=page.locator(f'.opblock-summary-path[data-path="{PREDICT}"]')
    )
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    for name, value in MEASUREMENTS.items():
        operation.locator(f'tr[data-property-name="{name}"] input').fill(value)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        operation.get_by_role("button", name="Execute").click()
    assert answer.value.status == 200, answer.value.text()
    shown = operation.locator(".live-responses-table .response-col_description pre").first
    expect(shown).to_contain_text('"species": "setosa"')
    result: dict[str, Any] = json.loads(answer.value.text())
    return result
