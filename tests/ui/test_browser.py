"""The dashboard in a real browser (headless Chromium) against a real aiosd and gateway: the page lists a live agent
process and its running request, its plots take new samples, approving a held tool call from the page lets the
agent's call proceed and denying it fails the call (both audited by the kernel), agent-supplied text stays text,
and with a keys file the login form opens the page."""

import json
import time

import pytest
from selenium.webdriver.common.by import By

from sdk import connect
from tests.ui import browser
from tests.ui.processes import AgentProcess


@pytest.fixture
def driver(request, tmp_path):
    yield from browser.page(request, tmp_path)


def open_dashboard(driver, base: str) -> None:
    driver.get(base + "/ui")
    browser.wait_for(
        driver,
        "a live kernel snapshot",
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "live",
    )


def row(driver, table: str, **data) -> object | None:
    selector = "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in data.items())
    found = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr{selector}")
    return found[0] if found else None


def points(driver, plot: str) -> int:
    return int(driver.find_element(By.ID, plot).get_attribute("data-points") or 0)


def audited(stack, approval_id: str, timeout_s: float = 60.0) -> list[str]:
    """The kernel's decisions recorded for approval_id (the audit log is written on a thread: wait for it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        decisions = [
            record["decision"]
            for record in map(json.loads, stack.audit_path.read_text().splitlines())
            if approval_id in json.dumps(record)
        ]
        if decisions or time.monotonic() > deadline:
            return decisions
        time.sleep(0.1)


def test_the_page_lists_a_live_agent_its_running_request_and_plots_rates(stack, driver):
    with AgentProcess(stack.kernel.address, "storyteller", "generate", "4000") as agent:
        open_dashboard(driver, stack.base(stack.keyless))
        agent_row = browser.wait_for(
            driver, f"agent {agent.agent_id}", lambda d: row(d, "agents", agent_id=agent.agent_id)
        )
        assert agent_row.find_elements(By.TAG_NAME, "td")[1].text == "storyteller"
        request_row = browser.wait_for(
            driver,
            f"a running request of {agent.agent_id}",
            lambda d: row(d, "requests", agent_id=agent.agent_id, state="running"),
        )
        assert request_row.find_elements(By.TAG_NAME, "td")[0].text.startswith(f"{agent.agent_id}/")
        browser.wait_for(
            driver,
            "the agent's row in the running state",
            lambda d: row(d, "agents", agent_id=agent.agent_id, state="running"),
        )
        before = points(driver, "plot-tokens")
        browser.wait_for(driver, "two new plot samples", lambda d: points(d, "plot-tokens") >= before + 2)
        browser.wait_for(
            driver,
            "a positive tokens/s sample while the agent generates",
            lambda d: float(d.find_element(By.ID, "plot-tokens").get_attribute("data-last") or 0) > 0,
        )
        assert points(driver, "plot-queue") >= before + 2 and points(driver, "plot-ttft") >= before + 2
        agent.stop()
        browser.wait_for(
            driver, "the killed agent gone from the page", lambda d: row(d, "agents", agent_id=agent.agent_id) is None
        )


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_a_decision_on_the_page_reaches_the_agents_held_tool_call(stack, driver, decision):
    open_dashboard(driver, stack.base(stack.keyless))
    with AgentProcess(stack.kernel.address, f"calc-{decision}", "tool", "6 * 7") as agent:
        held = browser.wait_for(driver, "the agent's held call", lambda d: held_call(d, agent.agent_id))
        approval_id = held.get_attribute("data-approval-id")
        assert held.find_elements(By.TAG_NAME, "td")[2].text == "calculate"
        held.find_element(By.CSS_SELECTOR, f"button.{decision}").click()
        if decision == "approve":
            assert agent.line("", 180) == "result 42"
        else:
            assert agent.line("", 180) == "error permission_denied"
        browser.wait_for(
            driver,
            "the decided call gone from the list",
            lambda d: row(d, "approvals", approval_id=approval_id) is None,
        )
    assert audited(stack, approval_id) == ["allow" if decision == "approve" else "deny"]


def held_call(driver, agent_id: str):
    """The approvals row of agent_id's held call, None until the page lists it."""
    for held in driver.find_elements(By.CSS_SELECTOR, "#approvals tbody tr[data-approval-id]"):
        if held.find_elements(By.TAG_NAME, "td")[1].text.endswith(f"({agent_id})"):
            return held
    return None


def test_text_an_agent_chose_is_shown_as_text(stack, driver):
    name = '<img src=x onerror="document.title=1">'
    with connect(stack.kernel.address, name=name) as kernel:
        open_dashboard(driver, stack.base(stack.keyless))
        shown = browser.wait_for(driver, "the agent's row", lambda d: row(d, "agents", agent_id=kernel.agent_id))
        assert shown.find_elements(By.TAG_NAME, "td")[1].text == name
        assert driver.find_elements(By.CSS_SELECTOR, "#agents img") == []
        assert driver.title == "AIOS operator"


def test_with_keys_the_login_form_opens_the_page(stack, driver):
    base = stack.base(stack.keyed)
    driver.get(base + "/ui")
    browser.wait_for(driver, "the login form", lambda d: d.current_url.endswith("/ui/login"))
    driver.find_element(By.ID, "key").send_keys(stack.keys["plain"])
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    browser.wait_for(driver, "the refusal", lambda d: d.find_elements(By.CSS_SELECTOR, "p.error"))
    driver.find_element(By.ID, "key").send_keys(stack.keys["operator"])
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    browser.wait_for(
        driver,
        "a live kernel snapshot",
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "live",
    )
    cookie = driver.get_cookie("aios_ui_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
