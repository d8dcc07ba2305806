"""The race report in headless Chromium: it renders, every plot is decoded and visible (non-blank
pixels where it sits in a screenshot), and the page makes no network request.

Needs Debian's ``chromium`` (``make test`` installs it). Set DESCENTLAB_SKIP_BROWSER=1 to skip.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import descentlab
from descentlab.tasks import get_task
from descentlab.train import RunResult

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000"]
PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => { const r = i.getBoundingClientRect();
    return {id: i.id, cls: i.className, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
            x: r.left + scrollX, y: r.top + scrollY, rw: r.width, rh: r.height}; });
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify({images, height: document.documentElement.scrollHeight,
                                    width: document.documentElement.scrollWidth});
  document.body.appendChild(pre);
});
</script>"""

pytestmark = pytest.mark.browser


def fake_run(task, *, model, optimizer, schedule, lr, batch_size, epochs, seed, evaluate_test, device,
             optimizer_options=None, patience=None):
    """A made-up run: best near lr=1e-2, diverging above 0.3, slower for larger batches."""
    if lr > 0.3:
        return RunResult("diverged", 2, "made up", 0.0, 2, 0, 0.01, None, float("nan"), None, 0, 0.0, None, None,
                         True, None, None, None, None, schedule, device, [], {})
    floor = 0.4 + 0.3 * abs(math.log10(lr) + 2) + 0.02 * seed + 0.03 * len(optimizer)
    steps_per_epoch = 1 if batch_size is None else 20
    history = []
    for epoch in range(epochs + 1):
        loss = floor + 2.0 / (1 + epoch * (0.3 if batch_size is None else 1.0))
        history.append({"step": epoch * steps_per_epoch, "epoch": float(epoch), "val_loss": loss,
                        "val_acc": min(0.98, 1.0 / (1 + loss)), "wall_s": 0.02 * epoch * (1 if batch_size else 0.2)})
    last = history[-1]
    test = (last["val_loss"] + 0.05, last["val_acc"] - 0.01) if evaluate_test else (None, None)
    return RunResult("ok", None, None, float(epochs), epochs * steps_per_epoch, 0, last["wall_s"], None,
                     last["val_loss"], last["val_acc"], last["step"], last["epoch"], last["val_loss"],
                     last["val_acc"], True, *test, *test, schedule, device, history, {})


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    if not CHROMIUM:
        if os.environ.get("DESCENTLAB_SKIP_BROWSER"):
            pytest.skip("chromium not installed and DESCENTLAB_SKIP_BROWSER is set")
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    out = tmp_path_factory.mktemp("race")
    result = descentlab.race(get_task("digits"), lrs=[1e-3, 1e-2, 1e-1, 1.0], seeds=3, epochs=6, out=out, jobs=1,
                             run_fn=fake_run, progress=False)
    assert all(r.status != "error" for r in result.records), [r.error for r in result.records if r.error][:1]
    return result.report_path


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"  # a fresh profile for every launch
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=90, check=False)


def page_requests(netlog: Path) -> list[str]:
    """URLs of the network requests the *page* started (the browser's own background requests carry
    no initiator: 'not an origin')."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = [(e.get("params", {}).get("url"), e.get("params", {}).get("initiator")) for e in log["events"]
            if e["type"] == start]
    return [url for url, initiator in urls
            if url and initiator != "not an origin" and not url.startswith(("data:", "file:"))]


def probe(tmp_path: Path, html: str, name: str) -> tuple[Path, dict, list[str]]:
    page = tmp_path / name
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    netlog = tmp_path / f"{name}.netlog.json"
    run = chromium(tmp_path, page, "--window-size=1200,900", f"--log-net-log={netlog}", "--dump-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the page did not finish loading: {run.stderr[-2000:]}"
    return page, json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), page_requests(netlog)


def test_report_is_self_contained_and_offline(report):
    html = report.read_text()
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    for attribute in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', html):
        assert attribute.startswith("data:image/png;base64,"), attribute[:80]
    assert not re.search(r"url\(", html)


def test_report_renders_every_plot_with_no_network_request(report, tmp_path):
    from PIL import Image

    page, found, requests = probe(tmp_path, report.read_text(), "report.html")
    assert requests == []
    plots = [image for image in found["images"] if "plot" in image["cls"]]
    assert len(plots) == 5, found
    for image in plots:
        assert image["complete"] and image["w"] > 200 and image["h"] > 150, image  # decoded by the browser
        assert image["rw"] > 200 and image["rh"] > 150, image  # laid out at a visible size

    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, page, f"--window-size={found['width']},{found['height'] + 50}", f"--screenshot={shot}")
    assert shot.exists(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10  # the page is not blank
    for image in plots:
        x, y = round(image["x"]), round(image["y"])
        region = pixels[y:y + round(image["rh"]), x:x + round(image["rw"])]
        assert region.shape[0] > 150 and region.shape[1] > 200, image
        dark = (region < 128).mean()  # lines, axes and text of the plot
        assert 0.005 < dark < 0.5 and region.std() > 15, (image["id"], dark, region.std())


def test_the_network_check_catches_a_page_that_fetches(tmp_path):
    """Control: the same probe flags a page that asks for an outside image."""
    if not CHROMIUM:
        pytest.fail("chromium is not installed")
    html = '<html><body><img class="plot" src="http://example.com/plot.png"></body></html>'
    _, found, requests = probe(tmp_path, html, "fetching.html")
    assert requests and requests[0].startswith("http://example.com/")
    assert found["images"][0]["w"] == 0  # and it did not load
