"""A real browser: JupyterLab on loopback, Debian's chromium driven by Playwright.

Opens 02_dpo_cdpo_ipo, runs all cells, moves the explorer's beta slider, and checks that the
readout and the plot changed. Everything runs in a temporary copy (notebooks, settings,
workspaces), so nothing is autosaved into the repository. Skipped, with the reason, where
chromium or Playwright is missing.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's chromium where it can)"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright; its own browser download is not used)"),
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base, token, path, method="GET", body=None):
    request = urllib.request.Request(f"{base}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 with a random token, serving a temporary copy of the notebooks."""
    root = tmp_path / "work"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns("*.py", ".ipynb_checkpoints"))
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.disable_check_xsrf=True",
         "--LabApp.news_url=", "--ServerApp.open_browser=False"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start: " + server.stderr.read().decode()[-2000:])
                time.sleep(0.5)
        yield base, token, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_connected_idle(base, token, kernel_id, page, timeout=120):
    """The server reports a kernel's state only once a client (the page) is connected: wait for both."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        kernel = _api(base, token, f"/api/kernels/{kernel_id}")
        if kernel.get("connections", 0) >= 1 and kernel.get("execution_state") == "idle":
            return
        page.wait_for_timeout(500)
    raise RuntimeError(f"the kernel did not become idle with a connected client: {kernel}")


def _settled_image(page, locator, timeout=30.0):
    """The image's src once it has stopped changing for a second."""
    last, since, deadline = None, time.time(), time.time() + timeout
    while time.time() < deadline:
        src = locator.get_attribute("src")
        if src != last:
            last, since = src, time.time()
        elif time.time() - since > 1.0:
            return src
        page.wait_for_timeout(200)
    return last


def test_beta_slider_changes_readout_and_plot_in_jupyterlab(lab):
    base, token, root = lab
    name = "02_dpo_cdpo_ipo.ipynb"
    # the session (and its kernel) exists before the page opens, so the page attaches to it
    session = _api(base, token, "/api/sessions", "POST", {"path": name, "type": "notebook", "name": name, "kernel": {"name": "python3"}})

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{base}/lab/tree/{name}?token={token}", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook", timeout=60000)
            _wait_connected_idle(base, token, session["kernel"]["id"], page)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()

            # the explorer's sliders appear once its cell has run; the dpo explorer comes first
            slider = page.locator(".widget-slider").filter(has_text="beta").first
            slider.wait_for(timeout=120000)
            readout = slider.locator(".widget-readout")
            image = page.locator(".jupyter-widgets img").first
            image.wait_for(timeout=60000)
            before_value, before_image = readout.inner_text(), _settled_image(page, image)

            slider.locator(".noUi-handle, .slider-handle, [role='slider']").first.focus()
            for _ in range(25):
                page.keyboard.press("ArrowRight")
            page.wait_for_timeout(500)
            after_image = _settled_image(page, image)
            after_value = readout.inner_text()
        finally:
            browser.close()

    assert float(after_value) > float(before_value), (before_value, after_value)
    assert after_image and after_image != before_image
    # the copy was used, and the repository's notebook was not touched
    assert json.loads((NOTEBOOKS / name).read_text())["cells"][1].get("outputs") == []
