"""report.html as a person sees it: rendered by headless Chromium, offline.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
the browser reads commands on fd 3 and answers on fd 4), so the test needs no
package beyond the standard library. Under CI (CI=true) a missing Chromium fails
the test; elsewhere it skips. A screenshot is left at /tmp/fusion-nas-report.png.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from search.report.write import write_report
from tests.test_report import FRONT, KNEE, make_run

SCREENSHOT = Path("/tmp/fusion-nas-report.png")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--remote-debugging-pipe"]


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    message = "headless Chromium is needed to render report.html (apt-get install chromium)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


class Chromium:
    """A headless Chromium and one page, spoken to in CDP JSON messages separated by NUL bytes."""

    def __init__(self, exe: str, profile: Path, log: Path) -> None:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # fds >= 10, so the shell's `3<&N 4>&M` cannot clobber one with the other
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_r, from_w))
        os.close(to_r)
        os.close(from_w)
        args = [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["bash", "-c", f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-', "bash", *args],
                pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        os.close(child_r)
        os.close(child_w)
        self.w, self.r = to_w, from_r
        self.buf, self.n, self.events = b"", 0, []
        self.log = log
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def _next(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError(f"no answer from Chromium; its log: {self.log.read_text(errors='replace')[-2000:]}")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise ConnectionError(f"Chromium closed the pipe; its log: {self.log.read_text(errors='replace')[-2000:]}")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, *, page: bool = False, timeout: float = 60) -> dict:
        self.n += 1
        msg: dict[str, Any] = {"id": self.n, "method": method, "params": params or {}}
        if page:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for m in self.events[seen:]:
                if m.get("method") == method:
                    return m
            seen = len(self.events)
            self.events.append(self._next(deadline))

    def evaluate(self, js: str) -> Any:
        r = self.send("Runtime.evaluate", {"expression": js, "awaitPromise": True, "returnByValue": True}, page=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.w)
        os.close(self.r)


# What the page drew, read from the DOM: per figure, each SVG trace's meta (set by
# search.report.page), its trial ids and how many marker / line paths it rendered.
INSPECT = """(async () => {
  const figs = Array.from(document.querySelectorAll('.plotly-graph-div'));
  const t0 = Date.now();
  while (Date.now() - t0 < 30000 && !figs.every(gd => gd._fullLayout && gd.querySelector('svg.main-svg g.trace')))
    await new Promise(r => setTimeout(r, 100));
  const out = {figures: {}};
  for (const gd of figs) {
    out.figures[gd.id] = Array.from(gd.querySelectorAll('g.trace')).map(g => {
      const tr = g.__data__ && g.__data__[0] && g.__data__[0].trace;
      return {meta: tr ? tr.meta : null, kind: tr ? tr.type : null,
              ids: tr && tr.customdata ? Array.from(tr.customdata).map(String) : [],
              points: g.querySelectorAll('path.point').length, lines: g.querySelectorAll('path.js-line').length,
              errorbars: g.querySelectorAll('path.yerror').length};
    });
  }
  out.table = Array.from(document.querySelectorAll('#front-table tbody tr')).map(r => r.cells[0].textContent);
  out.marks = Array.from(document.querySelectorAll('#front-table tbody tr')).map(r => r.cells[1].textContent);
  return JSON.stringify(out);
})()"""

SORT_BY_PARAMS = """(() => {
  const th = Array.from(document.querySelectorAll('#front-table th')).find(h => h.textContent === 'params');
  th.click();
  return Array.from(document.querySelectorAll('#front-table tbody tr')).map(r => r.cells[0].textContent);
})()"""

KNEE_CENTRE = """(() => {
  const gd = document.getElementById('fig-params-stage');
  const g = Array.from(gd.querySelectorAll('g.trace')).find(g => g.__data__[0].trace.meta === 'knee');
  const box = g.querySelector('path.point').getBoundingClientRect();
  return [box.x + box.width / 2, box.y + box.height / 2];
})()"""

HOVER_TEXT = """(async () => {
  const text = () => Array.from(document.querySelectorAll('#fig-params-stage .hoverlayer .hovertext'))
    .map(e => e.textContent).join('|');
  for (let i = 0; i < 50 && !text(); i++) await new Promise(r => setTimeout(r, 100));
  return text();
})()"""


def render(exe: str, page: Path, tmp: Path) -> dict[str, Any]:
    """What Chromium drew of `page` (INSPECT)."""
    browser = Chromium(exe, tmp / "profile", tmp / "chromium.log")
    try:
        for domain in ("Page", "Runtime"):
            browser.send(f"{domain}.enable", page=True)
        browser.send("Page.navigate", {"url": page.as_uri()}, page=True)
        browser.wait_event("Page.loadEventFired")
        return json.loads(browser.evaluate(INSPECT))
    finally:
        browser.close()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    exe = find_chromium()
    tmp = tmp_path_factory.mktemp("browser")
    store = make_run(tmp)
    page = write_report(store.run_dir)
    browser = Chromium(exe, tmp / "profile", tmp / "chromium.log")
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", page=True)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, page=True)
        browser.send("Page.navigate", {"url": page.as_uri()}, page=True)
        browser.wait_event("Page.loadEventFired")
        drawn = json.loads(browser.evaluate(INSPECT))
        browser.send("Emulation.setDeviceMetricsOverride",  # hover first: the page scrolls for nothing
                     {"width": 1280, "height": 3000, "deviceScaleFactor": 1, "mobile": False}, page=True)
        x, y = browser.evaluate(KNEE_CENTRE)
        browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, page=True)
        hover = browser.evaluate(HOVER_TEXT)
        sorted_rows = browser.evaluate(SORT_BY_PARAMS)
        height = browser.send("Page.getLayoutMetrics", page=True)["cssContentSize"]["height"]
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                            "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}}, page=True)
        png = tmp / "report.png"
        png.write_bytes(base64.b64decode(shot["data"]))
        shutil.copyfile(png, SCREENSHOT)
        events = list(browser.events)
    finally:
        browser.close()
    return {"store": store, "drawn": drawn, "events": events, "hover": hover, "sorted": sorted_rows, "png": png}


def test_page_loads_offline_with_no_console_error(rendered):
    errors = [e for e in rendered["events"] if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []
    urls = {e["params"]["request"]["url"] for e in rendered["events"] if e.get("method") == "Network.requestWillBeSent"}
    assert urls == {(rendered["store"].run_dir / "report.html").as_uri()}  # nothing but the page itself


def test_every_figure_is_drawn_as_svg(rendered):
    figures = rendered["drawn"]["figures"]
    assert set(figures) == {f"fig-{c}-{b}" for c in ("params", "flops") for b in ("stage", "op")} | {
        "fig-history", "fig-breakdown"}
    for name, traces in figures.items():
        assert traces, name
    assert sum(t["points"] for t in figures["fig-history"]) == 2 * len(rendered["store"].trials())
    assert sum(t["kind"] == "bar" for t in figures["fig-breakdown"]) == 4


@pytest.mark.parametrize("fig", ["params-stage", "flops-stage", "params-op", "flops-op"])
def test_each_trial_is_one_point_and_the_front_is_pareto_json(rendered, fig):
    traces = rendered["drawn"]["figures"][f"fig-{fig}"]
    trials = rendered["store"].trials()
    front = rendered["store"].read_json("pareto.json")
    by_meta = {m: [t for t in traces if t["meta"] == m] for m in ("trials", "front", "knee", "staircase")}
    drawn_ids = [i for t in by_meta["trials"] for i in t["ids"]]
    assert sum(t["points"] for t in by_meta["trials"]) == len(trials) == 11  # ok, failed, errored, early-stopped
    assert sorted(drawn_ids) == sorted(t["trial_id"] for t in trials)
    [ring], [knee], [steps] = by_meta["front"], by_meta["knee"], by_meta["staircase"]
    assert ring["points"] == len(front["trial_ids"]) and sorted(ring["ids"]) == sorted(front["trial_ids"])
    assert set(ring["ids"]) == FRONT
    assert knee["points"] == 1 and knee["ids"] == [front["knee"]] == [KNEE]
    assert steps["lines"] == 1


def test_hovering_the_knee_shows_its_architecture_and_scores(rendered):
    hover = rendered["hover"]
    for text in (f"trial {KNEE}", "knee", "stage: hybrid", "cell 1: concat(m1@1, m2@1) → 16, relu",
                 "val accuracy 0.8500", "params 2k", "FLOPs 4k"):
        assert text in hover


def test_front_table_lists_the_front_and_sorts_on_click(rendered):
    assert rendered["drawn"]["table"] == ["A", "B", "E", "C", "H"]  # most accurate first
    assert rendered["sorted"] in (["C", "H", "B", "E", "A"], ["H", "C", "B", "E", "A"])  # by params, ascending


def test_screenshot_is_written_for_a_person_to_look_at(rendered):
    png = rendered["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert SCREENSHOT.read_bytes()[:8] == png[:8]  # the stable copy (another run may have refreshed it)


def test_front_points_carry_error_bars_and_an_unstable_one_is_crossed_out(tmp_path):
    """A run whose front candidates were confirmed on 3 seeds, one of them a coin flip
    (tests/test_unstable.py): each front point has its mean ± std bar, and the coin flip is
    drawn crossed out and named in the table, while the knee is another."""
    from tests.test_unstable import seeded_trials

    exe = find_chromium()
    store = make_run(tmp_path, trials=seeded_trials())
    drawn = render(exe, write_report(store.run_dir), tmp_path)
    front = store.read_json("pareto.json")
    for fig in ("params-stage", "flops-op"):
        traces = drawn["figures"][f"fig-{fig}"]
        [ring] = [t for t in traces if t["meta"] == "front"]
        [marked] = [t for t in traces if t["meta"] == "unstable"]
        [knee] = [t for t in traces if t["meta"] == "knee"]
        assert sorted(ring["ids"]) == sorted(front["trial_ids"]) == ["S1", "S2", "U"]
        assert ring["errorbars"] == 3  # one bar per front point
        assert marked["ids"] == ["U"] and marked["points"] == 1 and knee["ids"] != ["U"]
    marks = dict(zip(drawn["table"], drawn["marks"], strict=True))
    assert marks["U"] == "unstable" and marks[front["knee"]] == "★"


def test_static_images_are_written_through_kaleido(tmp_path):
    find_chromium()  # kaleido drives the same Chromium
    store = make_run(tmp_path)
    write_report(store.run_dir, ["svg", "png"])
    names = ["params-stage", "flops-stage", "params-op", "flops-op", "history", "breakdown"]
    for name in names:
        assert (store.run_dir / f"report-{name}.svg").read_text().startswith("<svg")
        assert (store.run_dir / f"report-{name}.png").read_bytes()[:4] == b"\x89PNG"
    # the scatter images hold one marker per trial, as the page does
    svg = (store.run_dir / "report-params-stage.svg").read_text()
    assert len(re.findall(r'<path class="point\b', svg)) == len(store.trials()) + len(FRONT) + 1  # trials, front rings, knee
