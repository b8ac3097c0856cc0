"""A real browser: JupyterLab on loopback, Debian's chromium driven by Playwright.

Every notebook in notebooks/ (found when the tests run) is opened and run top to bottom. Then,
for every explorer it shows (a widget output with an image and a slider):

- the image is drawn at its natural size (±2 px), at a 1280 px wide window and at 1920 px;
- the facts of a lossviz explorer (the step readout of the dynamics explorer) are visible: inside the
  page, below the image, not cut off; each screenshot holds the whole explorer (a window tall enough
  for it, scrolled to the top of the notebook's panel, checked to lie inside it);
- moving the first slider with the keyboard changes the image's pixels.

No cell may end in an error. Screenshots of every explorer and of each whole notebook go to a
temporary folder whose path is printed (``pytest -s`` shows it). Everything runs in a temporary
copy of the notebooks with its own settings, so nothing is autosaved into the repository.
Skipped, with the reason, where chromium or Playwright is missing.
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
WIDTHS = (1280, 1920)

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


def _settings(root: Path):
    """Lab settings for a test: no news, and every cell kept in the page (no windowing) so every explorer is found."""
    for plugin, values in {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        folder, name = plugin.split("/")
        path = root / "@jupyterlab" / folder
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{name}.jupyterlab-settings").write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a random token, serving a temporary copy of the notebooks."""
    tmp_path = tmp_path_factory.mktemp("lab")
    root = tmp_path / "work"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns("*.py", ".ipynb_checkpoints", "__pycache__"))
    _settings(tmp_path / "settings")
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


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser-screenshots")
    print(f"\nbrowser screenshots: {folder}")
    return folder


def _wait_connected_idle(base, token, kernel_id, page, timeout=120):
    """The server reports a kernel's state only once a client (the page) is connected: wait for both."""
    deadline = time.time() + timeout
    kernel = {}
    while time.time() < deadline:
        kernel = _api(base, token, f"/api/kernels/{kernel_id}")
        if kernel.get("connections", 0) >= 1 and kernel.get("execution_state") == "idle":
            return
        page.wait_for_timeout(500)
    raise RuntimeError(f"the kernel did not become idle with a connected client: {kernel}")


ERROR_TEXT = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(o => o.innerText).filter(t => /Traceback|Error/.test(t)).join('\\n')"""


def _wait_all_run(base, token, kernel_id, page, timeout=300):
    """Every code cell has an execution count (no '[*]' or '[ ]' prompt) and the kernel has been idle a second."""
    deadline, idle_since = time.time() + timeout, None
    while time.time() < deadline:
        pending = page.evaluate("""() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
            .filter(p => !/\\[\\d+\\]/.test(p.textContent)).length""")
        error = page.evaluate(ERROR_TEXT)
        assert not error, f"a cell ended in an error (Run All stops there):\n{error[-1500:]}"
        state = _api(base, token, f"/api/kernels/{kernel_id}").get("execution_state")
        if pending == 0 and state == "idle":
            idle_since = idle_since or time.time()
            if time.time() - idle_since > 1.0:
                return
        else:
            idle_since = None
        page.wait_for_timeout(500)
    raise RuntimeError(f"the notebook did not finish running in {timeout} s ({pending} cells pending)")


# an explorer: a widget output with an image and a slider (lossviz explorers carry the class lossviz-explorer)
FIND_EXPLORERS = """() => {
    const outputs = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output')];
    const found = [];
    for (const out of outputs) {
        const groups = out.querySelectorAll('.lossviz-explorer');
        const roots = groups.length ? [...groups] : (out.querySelector('.jupyter-widgets img') && out.querySelector('.widget-slider') ? [out] : []);
        for (const root of roots) {
            root.setAttribute('data-test-explorer', String(found.length));
            found.push(root.classList.contains('lossviz-explorer') ? 'lossviz' : 'other');
        }
    }
    return found;
}"""

MEASURE = """root => {
    const img = root.querySelector('img');
    const r = img.getBoundingClientRect();
    // a lossviz explorer's facts; the dynamics explorer's readout is the last text widget below its image
    const texts = [...root.querySelectorAll('.widget-html, .widget-htmlmath')]
        .filter(e => img.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING);
    const facts = root.querySelector('.lossviz-facts') || texts[texts.length - 1];
    const panel = root.closest('.jp-Notebook').getBoundingClientRect();
    const out = {natural: [img.naturalWidth, img.naturalHeight], shown: [r.width, r.height], image: [r.left, r.top, r.right, r.bottom],
                 panel: [panel.left, panel.right]};
    if (facts) {
        const f = facts.getBoundingClientRect();
        const style = getComputedStyle(facts);
        out.facts = {box: [f.left, f.top, f.right, f.bottom], visible: style.visibility !== 'hidden' && style.display !== 'none',
                     text: facts.innerText, scroll: [facts.scrollWidth, facts.clientWidth]};
    }
    return out;
}"""

IMAGE_HASH = """async root => {
    const img = root.querySelector('img');
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let h = 2166136261;
    for (const b of bytes) { h ^= b; h = Math.imul(h, 16777619) >>> 0; }
    return h + ':' + bytes.length;
}"""


# the explorer's box and the box of the panel that scrolls it (below the menu, tabs and notebook toolbar)
IN_VIEW = """root => {
    let scroller = root.parentElement;
    while (scroller && !/(auto|scroll)/.test(getComputedStyle(scroller).overflowY)) scroller = scroller.parentElement;
    const r = root.getBoundingClientRect(), s = (scroller || document.documentElement).getBoundingClientRect();
    return {box: [r.top, r.bottom], view: [Math.max(s.top, 0), Math.min(s.bottom, window.innerHeight)]};
}"""


def _screenshot_whole(page, explorer, path, where):
    """Screenshot of the whole explorer: a window tall enough for it, the explorer scrolled to the top of the
    notebook's panel (not under the toolbar), and a check that all of it is inside the visible panel."""
    height = explorer.evaluate("el => el.getBoundingClientRect().height")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], int(height) + 260)})
    page.wait_for_timeout(300)
    explorer.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    seen = explorer.evaluate(IN_VIEW)
    (top, bottom), (view_top, view_bottom) = seen["box"], seen["view"]
    assert view_top - 1 <= top and bottom <= view_bottom + 1, f"{where}: the explorer {seen['box']} is not all inside the panel {seen['view']}"
    explorer.screenshot(path=str(path))
    page.set_viewport_size(size)
    page.wait_for_timeout(200)


def _check_sizes(m, where):
    (nw, nh), (w, h) = m["natural"], m["shown"]
    assert nw > 0 and abs(w - nw) <= 2 and abs(h - nh) <= 2, f"{where}: image shown at {w:.0f}x{h:.0f}, natural {nw}x{nh}"
    assert m["image"][2] <= m["panel"][1] + 1, f"{where}: the image runs past the notebook's right edge"


def _check_facts(m, where):
    facts = m.get("facts")
    assert facts is not None and facts["visible"], f"{where}: no visible facts"
    left, top, right, bottom = facts["box"]
    assert right - left > 200 and bottom - top > 10 and facts["text"].strip(), f"{where}: facts box {facts['box']}"
    assert top >= m["image"][3] - 1, f"{where}: the facts overlap the image"
    assert right <= m["panel"][1] + 1 and facts["scroll"][0] <= facts["scroll"][1] + 2, f"{where}: the facts are cut off"


NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_explorers_in_jupyterlab(lab, browser, shots, name):
    base, token, root = lab
    source = (root / name).read_text()  # the copy that runs
    # the session (and its kernel) exists before the page opens, so the page attaches to it
    session = _api(base, token, "/api/sessions", "POST", {"path": name, "type": "notebook", "name": name, "kernel": {"name": "python3"}})
    kernel = session["kernel"]["id"]
    stem = name.removesuffix(".ipynb")
    page = browser.new_page(viewport={"width": WIDTHS[0], "height": 1000})
    try:
        # a workspace of its own, reset: the tabs of the notebook tested before are not restored beside this one
        page.goto(f"{base}/lab/workspaces/{stem}/tree/{name}?reset&token={token}", wait_until="domcontentloaded")
        page.wait_for_selector(".jp-Notebook", timeout=60000)
        _wait_connected_idle(base, token, kernel, page)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        _wait_all_run(base, token, kernel, page)

        kinds = page.evaluate(FIND_EXPLORERS)
        expects_explorer = "explore(" in source or "explore_dynamics(" in source
        assert kinds or not expects_explorer, f"{name} calls an explorer but none was shown"
        for k, kind in enumerate(kinds):
            explorer = page.locator(f"[data-test-explorer='{k}']")
            explorer.scroll_into_view_if_needed()
            explorer.locator("img").first.wait_for(timeout=30000)
            page.wait_for_function("el => el.querySelector('img').naturalWidth > 0", arg=explorer.element_handle(), timeout=30000)
            where = f"{name} explorer {k}"
            m = explorer.evaluate(MEASURE)
            _check_sizes(m, f"{where} at {WIDTHS[0]} px")
            _check_facts(m, where)  # the facts of a lossviz explorer, the readout of the dynamics explorer
            _screenshot_whole(page, explorer, shots / f"{stem}_explorer{k}_before.png", where)

            before_hash = explorer.evaluate(IMAGE_HASH)
            slider = explorer.locator(".widget-slider:not(.mod-disabled)").filter(has=page.locator(".noUi-handle, [role='slider']")).first
            handle = slider.locator(".noUi-handle, [role='slider']").first
            readout = slider.locator(".widget-readout").first.inner_text()
            handle.focus()
            for _ in range(15):
                page.keyboard.press("ArrowRight")
            if slider.locator(".widget-readout").first.inner_text() == readout:  # at the top of its range: go the other way
                for _ in range(30):
                    page.keyboard.press("ArrowLeft")
            changed, deadline = False, time.time() + 20
            while time.time() < deadline and not changed:
                page.wait_for_timeout(300)
                changed = explorer.evaluate(IMAGE_HASH) != before_hash
            assert changed, f"{where}: moving the slider {readout!r} did not change the image"
            # each key press may start a redraw (the dynamics explorer retrains per value): wait until the image rests
            last, deadline = explorer.evaluate(IMAGE_HASH), time.time() + 30
            while time.time() < deadline:
                page.wait_for_timeout(800)
                now = explorer.evaluate(IMAGE_HASH)
                if now == last:
                    break
                last = now
            page.wait_for_timeout(600)  # the formula at the new value prints once the slider rests
            _screenshot_whole(page, explorer, shots / f"{stem}_explorer{k}_moved.png", f"{where} after the move")
            m = explorer.evaluate(MEASURE)
            _check_sizes(m, f"{where} after the move")
            _check_facts(m, f"{where} after the move")
        page.screenshot(path=str(shots / f"{stem}_page_{WIDTHS[0]}.png"), full_page=False)

        page.set_viewport_size({"width": WIDTHS[1], "height": 1000})
        page.wait_for_timeout(500)
        for k in range(len(kinds)):
            _check_sizes(page.locator(f"[data-test-explorer='{k}']").evaluate(MEASURE), f"{name} explorer {k} at {WIDTHS[1]} px")
        if kinds:
            page.locator("[data-test-explorer='0']").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / f"{stem}_page_{WIDTHS[1]}.png"), full_page=False)
    finally:
        page.close()
        _api(base, token, f"/api/sessions/{session['id']}", "DELETE")
    # the copy was run: the repository's notebook holds no outputs (it may be regenerated meanwhile, so no byte compare)
    cells = [c for c in json.loads((NOTEBOOKS / name).read_text())["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in cells)
