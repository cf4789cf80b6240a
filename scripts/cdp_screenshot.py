"""Screenshot of a web page in headless Chromium after it has run for a while (the Rerun web viewer
needs seconds to load its wasm, connect and draw, which `chromium --screenshot` does not wait for).

Drives Chromium over the DevTools protocol (websocket-client): start it headless with software GL
(SwiftShader), open URL, wait, capture a PNG. Used by scripts/live_view_screenshot.sh.

    python scripts/cdp_screenshot.py URL OUT.png --wait 12 --size 1600x900
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def wait_for_devtools(port: int, timeout_s: float) -> str:
    """The websocket URL of the first page target once Chromium answers on `port`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"chromium's DevTools did not answer on port {port} within {timeout_s} s")
        time.sleep(0.3)


class Cdp:
    """One DevTools websocket: call(method, **params) waits for that call's result."""

    def __init__(self, url: str):
        import websocket

        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--wait", type=float, default=12.0, help="seconds between opening the page and the screenshot")
    p.add_argument("--size", default="1600x900", help="window size WxH")
    p.add_argument("--port", type=int, default=9222, help="DevTools port")
    p.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    profile = tempfile.mkdtemp(prefix="cdp-shot-")
    cmd = [args.chromium, "--headless=new", "--no-sandbox", "--no-first-run", "--disable-dev-shm-usage",
           "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
           f"--window-size={w},{h}", f"--remote-debugging-port={args.port}", f"--user-data-dir={profile}", "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        cdp = Cdp(wait_for_devtools(args.port, 30))
        cdp.call("Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1, mobile=False)
        cdp.call("Page.enable")
        cdp.call("Page.navigate", url=args.url)
        time.sleep(args.wait)
        png = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
        with open(args.out, "wb") as f:
            f.write(png)
        print(f"wrote {args.out} ({len(png)} bytes) after {args.wait:.0f} s on {args.url}")
        return 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
