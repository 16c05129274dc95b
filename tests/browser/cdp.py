"""A headless Chromium driven over the Chrome DevTools protocol, standard library only.

``--remote-debugging-pipe`` speaks the protocol on file descriptors 3 (commands in) and
4 (replies and events out), one NUL-terminated JSON message each, so no websocket
client is needed.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

CHROMIUM = Path(os.environ.get("BASIS_CHROMIUM", "/usr/bin/chromium"))
INSTALL = Path(__file__).resolve().parent / "install_chromium.sh"
T = TypeVar("T")


class BrowserError(RuntimeError):
    """Chromium exited, did not answer in time, or a page's script failed."""


class Chromium:
    """One headless Chromium with one page; use as a context manager.

    Args:
        log_path: Chromium's stderr, appended to.
        size: the window, (width, height) in CSS pixels.
        timeout_s: how long one protocol command may take.
    """

    def __init__(self, log_path: Path, size: tuple[int, int] = (1400, 900),
                 timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="basis-chromium-")
        cmd_r, cmd_w = os.pipe()   # we write commands → Chromium's fd 3
        out_r, out_w = os.pipe()   # Chromium's fd 4 → we read

        def to_3_and_4() -> None:   # in the child, before exec
            # lifted above 4 first, so that neither dup2 overwrites the other's source
            high_in, high_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, out_w))
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        with open(log_path, "ab") as log:
            # as root Chromium runs only without its sandbox; close_fds=False keeps the
            # inheritable 3 and 4 (every other descriptor of ours is close-on-exec)
            self._proc = subprocess.Popen(
                [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                 "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                 f"--window-size={size[0]},{size[1]}", "--no-first-run", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=False,
                preexec_fn=to_3_and_4)
        os.close(cmd_r)
        os.close(out_w)
        self._out, self._in = cmd_w, out_r
        self._buf = b""
        self._id = 0
        self._session: str | None = None
        try:
            target = self.send("Target.createTarget", browser=True, url="about:blank")
            self._session = self.send("Target.attachToTarget", browser=True,
                                      targetId=target["targetId"], flatten=True)["sessionId"]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, browser: bool = False, **params: Any) -> dict[str, Any]:
        """Run one protocol command → its result; ``browser``: not on the page."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self._session and not browser:
            msg["sessionId"] = self._session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == self._id:   # anything else is an event: not needed
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply["result"]

    def _read(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer {method} in {self.timeout_s} s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (code {self._proc.poll()}) during {method}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def js(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page → its value (JSON-able)."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression[:80]}…: {res['exceptionDetails']}")
        return res["result"].get("value")

    def text(self) -> str:
        """What the page shows, as the user reads it."""
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait(self, probe: Callable[[], T | None], what: str, timeout_s: float = 60.0,
             every_s: float = 0.3) -> T:
        """Poll ``probe`` until it returns something truthy → that; raise after
        ``timeout_s`` with ``what`` and the page's text."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = probe()
            if got:
                return got
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout_s:.0f} s waiting for {what}; "
                                   f"the page shows:\n{self.text()[:3000]}")
            time.sleep(every_s)

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        """Drag with the left mouse button from ``start`` to ``end`` (CSS pixels), in
        10 moves: widgets start a drag only past a few pixels' threshold."""
        steps = [(start[0] + (end[0] - start[0]) * i / 10, start[1] + (end[1] - start[1]) * i / 10)
                 for i in range(1, 11)]
        events = [("mouseMoved", start, 0), ("mousePressed", start, 1)]
        events += [("mouseMoved", xy, 1) for xy in steps] + [("mouseReleased", end, 0)]
        for kind, (x, y), buttons in events:
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      buttons=buttons, clickCount=1)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.send("Browser.close", browser=True)
            except BrowserError:
                pass
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)
