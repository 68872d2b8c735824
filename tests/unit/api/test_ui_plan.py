"""The "Plan" view of ``/freshet/ui`` (issue 20): on the page, behind the same sign-in as
the others, reading a report file in the browser and sending nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.api.ui.controller import VIEWS, page
from gateway.api.ui.plan import PLAN_JS
from tests.security.gateways import gateway

ADMIN = "admin-secret-for-tests"


@pytest.mark.asyncio
async def test_the_page_has_the_plan_view(tmp_path: Path) -> None:
    env = {"FRESHET_AUTH": "on", "FRESHET_ADMIN_KEY": ADMIN}
    async with gateway(tmp_path, env=env) as client:
        answer = await client.get("/freshet/ui")
    assert answer.status_code == 200
    text = answer.text
    assert '<a href="#plan" data-view="plan">Plan</a>' in text
    assert '<section class="view" id="view-plan" data-view="plan" hidden>' in text
    assert '<input id="plan-file" type="file"' in text
    assert "views.plan = {" in text
    assert ADMIN not in text


def test_the_plan_view_reads_files_only() -> None:
    """No data call and no server path: the report is the file the user picks. Shown, as
    every view, only once signed in (the shell's show() checks signedIn() first)."""
    assert "fetch(" not in PLAN_JS
    assert "api(" not in PLAN_JS
    assert "file.text()" in PLAN_JS
    assert [v.id for v in VIEWS][-1] == "plan"
    body, _ = page(auth="on")
    assert "if (!signedIn()) return;" in body
