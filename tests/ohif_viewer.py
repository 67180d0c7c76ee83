"""The OHIF viewer v3 in headless Chromium, for the viewer tests (tests/test_ohif_viewer.py and
tests/test_monailabel_viewer.py).

``OhifServer`` serves npm's built ``@ohif/app`` (``scripts/setup_ohif.sh`` puts it in a cache outside the
repository) on 127.0.0.1 with an ``app-config.js`` of its own: one DICOMweb data source at ``/dicom-web`` on the same
origin, which the server proxies to the PACS with the Basic auth header added and the browser's Host header kept
(Orthanc builds its BulkDataURIs from it, so they point back at the proxy). ``start_chromium`` starts Debian's
``chromium`` through Debian's ``chromedriver`` with Selenium: software WebGL2 (SwiftShader), a fresh profile, nothing
downloaded. ``OhifPage`` drives a viewer page as a user does, ``MonaiLabelPanel`` the MONAI Label panel of the OHIF
that MONAI Label serves at ``/ohif/``, and ``tinted``/``screen_mask`` say where a segment is drawn in a screenshot.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import io
import json
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "OHIF_DIST",
    "OHIF_VERSION",
    "MonaiLabelPanel",
    "OhifPage",
    "OhifServer",
    "browser_available",
    "instance_uid",
    "pixels_of",
    "screen_mask",
    "start_chromium",
    "tinted",
]

# 3.12.10 renders in headless Chromium here; 3.13.2 draws the MR as a black/white mask (shared/specs notes)
OHIF_VERSION = "3.12.10"
OHIF_DIR = Path(os.environ.get("ATTUNETS_OHIF_DIR",
                               Path.home() / ".cache" / "attention-unets" / f"ohif-{OHIF_VERSION}"))
OHIF_DIST = OHIF_DIR / "dist"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# WebGL2 on SwiftShader (--use-gl=swiftshader gives no WebGL; OHIF's CPU rendering crashes when a SEG loads);
# --no-sandbox because CI runs as root; nothing phones home, and a page asking for an outside name (the OHIF of the
# monailabel wheel asks Google for a font) gets "not found" with or without a network: the tests reach 127.0.0.1 only
CHROMIUM_FLAGS = (
    "--headless=new",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

# headers that belong to one connection, never forwarded by the proxy
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade"}
_DICOMWEB_PREFIX = "/dicom-web"


def browser_available() -> bool:
    """Whether Debian's chromium and chromedriver, Selenium and the OHIF copy of ``scripts/setup_ohif.sh`` exist."""
    return (CHROMIUM.exists() and CHROMEDRIVER.exists() and importlib.util.find_spec("selenium") is not None
            and (OHIF_DIST / "index.html").exists() and (OHIF_DIST / "app-config.js").exists())


def app_config(original: str) -> str:
    """OHIF's shipped ``app-config.js`` with its data sources replaced by the one same-origin DICOMweb source.

    The shipped file is kept as it is (its other settings, its functions) and the data sources are set after it, so
    the page sees exactly one data source, ``/dicom-web`` on its own origin, read with WADO-RS.
    """
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "pacs",
        "configuration": {
            "friendlyName": "test PACS (Orthanc through the test proxy)",
            "name": "pacs",
            "qidoRoot": _DICOMWEB_PREFIX,
            "wadoRoot": _DICOMWEB_PREFIX,
            "wadoUriRoot": _DICOMWEB_PREFIX,
            "qidoSupportsIncludeField": True,
            "supportsReject": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": True,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True},
        },
    }
    return (f"{original}\n\n// attention-unets test server: one DICOMweb data source, same origin, proxied to the "
            f"test PACS\nwindow.config.dataSources = [{json.dumps(source, indent=2)}];\n"
            "window.config.defaultDataSourceName = 'pacs';\n")


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def __init__(self, request, client_address, server: _Server) -> None:
        super().__init__(request, client_address, server, directory=str(server.dist))

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        self.server.requests.append(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else args}")

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _route(self, head: bool) -> None:
        path = urlsplit(self.path).path
        if path == _DICOMWEB_PREFIX or path.startswith(_DICOMWEB_PREFIX + "/"):
            self._proxy()
        elif path == "/app-config.js":
            self._send_bytes(self.server.app_config, "text/javascript; charset=utf-8", head)
        elif not Path(self.translate_path(self.path)).exists() and "." not in path.rsplit("/", 1)[-1]:
            # a route of the single-page app (/viewer, /segmentation): the app's page
            self._send_bytes((self.server.dist / "index.html").read_bytes(), "text/html; charset=utf-8", head)
        else:
            super().do_HEAD() if head else super().do_GET()

    def _send_bytes(self, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _proxy(self) -> None:
        """Forward the request to the PACS as it came (the Host header too), with the PACS credentials."""
        headers = {key: value for key, value in self.headers.items()
                   if key.lower() not in _HOP_BY_HOP and key.lower() != "authorization"}
        headers["Authorization"] = self.server.authorization
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        target = self.server.pacs
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            # a Host header in ``headers`` replaces the one http.client would write
            connection.request(self.command, target.path.rstrip("/").removesuffix(_DICOMWEB_PREFIX) + self.path,
                               body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except OSError as error:
            self.send_error(502, f"PACS unreachable: {error}")
            return
        finally:
            connection.close()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dist: Path
    app_config: bytes
    pacs: object
    authorization: str
    requests: list[str]


class OhifServer:
    """OHIF's ``dist/`` and a proxy to the PACS's DICOMweb on ``http://127.0.0.1:<port>``, in a thread.

    Args:
        dicomweb_url: the PACS's DICOMweb root (its path must end in ``/dicom-web``, as Orthanc's does).
        auth: ``(username, password)`` the proxy sends as Basic auth.
        dist: the built OHIF (default: the copy of ``scripts/setup_ohif.sh``); only read.
    """

    def __init__(self, dicomweb_url: str, auth: tuple[str, str], dist: Path = OHIF_DIST) -> None:
        pacs = urlsplit(dicomweb_url)
        if not pacs.path.rstrip("/").endswith(_DICOMWEB_PREFIX):
            raise ValueError(f"the PACS's DICOMweb root must end in {_DICOMWEB_PREFIX}: {dicomweb_url}")
        self.dist = Path(dist)
        self.dicomweb_url = dicomweb_url
        self.auth = auth
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the OHIF server is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[str]:
        """``METHOD path -> status`` of every request served so far (for failure messages)."""
        return list(self._server.requests) if self._server else []

    def viewer_url(self, study_uid: str) -> str:
        return f"{self.url}/viewer?StudyInstanceUIDs={study_uid}"

    def start(self) -> OhifServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.dist = self.dist
        server.app_config = app_config((self.dist / "app-config.js").read_text(encoding="utf-8")).encode()
        server.pacs = urlsplit(self.dicomweb_url)
        token = base64.b64encode(":".join(self.auth).encode()).decode()
        server.authorization = f"Basic {token}"
        server.requests = []
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ohif-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> OhifServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_chromium(user_data_dir: Path, window_size: tuple[int, int] = (1400, 1000), log_file: Path | None = None):
    """Headless Chromium (Debian's) driven by Debian's chromedriver, with a fresh profile in ``user_data_dir`` and
    the browser console kept for ``driver.get_log("browser")``. The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={window_size[0]},{window_size[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_file) if log_file else os.devnull)
    return webdriver.Chrome(options=options, service=service)


# --- the OHIF page, driven like a user: what the viewer test does in it -------------------------------------------

# the active viewport's geometry: its current image (and its place in the viewport's image ids: a volume viewport's
# own slice index may count the other way), and where the centres of that image's pixels (0, 0), (1, 0)
# (next column) and (0, 1) (next row) land on the page, in CSS pixels
_JS_VIEWPORT = """
const services = window.services;
const viewportId = services.viewportGridService.getActiveViewportId();
const enabled = window.cornerstone.getEnabledElements().find(e => e.viewportId === viewportId);
if (!enabled || !enabled.viewport.getImageIds || enabled.viewport.getImageIds().length === 0) { return null; }
const viewport = enabled.viewport;
const imageId = viewport.getCurrentImageId();
const plane = imageId && window.cornerstone.metaData.get('imagePlaneModule', imageId);
if (!plane || !plane.imagePositionPatient) { return null; }
const world = (c, r) => [0, 1, 2].map(k => plane.imagePositionPatient[k]
    + c * plane.columnPixelSpacing * plane.rowCosines[k] + r * plane.rowPixelSpacing * plane.columnCosines[k]);
const rect = viewport.canvas.getBoundingClientRect();
const shift = p => [p[0] + rect.left, p[1] + rect.top];
return {viewportId, imageId, index: viewport.getImageIds().indexOf(imageId), imageIds: viewport.getImageIds(),
        rows: plane.rows, columns: plane.columns,
        origin: shift(viewport.worldToCanvas(world(0, 0))), column: shift(viewport.worldToCanvas(world(1, 0))),
        row: shift(viewport.worldToCanvas(world(0, 1))),
        canvas: [rect.left, rect.top, rect.width, rect.height], ratio: window.devicePixelRatio};
"""

# every segmentation OHIF holds: its label and, per segment, number, label and the colour drawn in the viewport
_JS_SEGMENTATIONS = """
const services = window.services;
const viewportId = services.viewportGridService.getActiveViewportId();
return services.segmentationService.getSegmentations().map(s => ({
    id: s.segmentationId, label: s.label,
    segments: Object.values(s.segments).filter(x => x).map(x => ({
        number: x.segmentIndex, label: x.label,
        color: services.segmentationService.getSegmentColor(viewportId, s.segmentationId, x.segmentIndex)}))}));
"""

_JS_DISPLAY_SETS = """
return window.services.displaySetService.getActiveDisplaySets().map(d => ({
    modality: d.Modality, description: d.SeriesDescription, handler: d.SOPClassHandlerId,
    series: d.SeriesInstanceUID, sopClass: d.SOPClassUID}));
"""

_BANNER_BUTTONS = (
    "//button[@data-cy='confirm-and-hide-button']",  # "OHIF Viewer is for investigational use only"
    "//button[contains(@class, 'shepherd-button') and normalize-space(.)='Skip all']",  # the onboarding tour
)


class OhifPage:
    """One OHIF viewer page in a Selenium driver; every wait polls a condition up to ``timeout`` seconds."""

    def __init__(self, driver, timeout: float = 90.0) -> None:
        self.driver = driver
        self.timeout = timeout
        self.console: list[dict] = []

    def wait(self, condition, message: str, timeout: float | None = None):
        """``condition(driver)``'s first truthy value, polled; a ``TimeoutException`` naming ``message`` else."""
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        waiter = WebDriverWait(self.driver, timeout or self.timeout, poll_frequency=0.25,
                               ignored_exceptions=(StaleElementReferenceException, WebDriverException))
        return waiter.until(condition, message)

    def collect_console(self) -> list[dict]:
        """The browser console since the last call, appended to ``console``."""
        entries = self.driver.get_log("browser")
        self.console.extend(entries)
        return entries

    def open(self, url: str) -> None:
        self.driver.get(url)

    def thumbnails(self) -> list:
        """The study browser's series entries (with and without a thumbnail image)."""
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, "[data-cy^=study-browser-thumbnail]")

    def thumbnail_texts(self) -> list[str]:
        return [element.text for element in self.thumbnails()]

    def wait_for_thumbnails(self, count: int) -> list[str]:
        return self.wait(lambda _: len(texts := self.thumbnail_texts()) >= count and texts,
                         f"{count} series in the study browser")

    def viewport(self) -> dict | None:
        """The active viewport's image ids, current image and pixel-to-page mapping (``None`` before an image)."""
        return self.driver.execute_script(_JS_VIEWPORT)

    def wait_for_image(self) -> dict:
        return self.wait(lambda _: self.viewport(), "an image in the viewport")

    def dismiss_banners(self, wait_s: float = 0.0) -> int:
        """Click away the onboarding tour and the "investigational use" banner until neither shows; with
        ``wait_s``, first wait up to that long for both to have come (they come a moment after the first image, in
        either order, the tour's backdrop over the banner). Returns how many clicks closed something."""
        import time

        from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
        from selenium.webdriver.common.by import By

        def visible(xpath):
            return next((e for e in self.driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None)

        seen: set[str] = set()
        closed = 0
        waiting_until = time.monotonic() + wait_s
        deadline = time.monotonic() + wait_s + 30
        while True:
            shown = [(xpath, button) for xpath in _BANNER_BUTTONS if (button := visible(xpath)) is not None]
            if not shown and (len(seen) == len(_BANNER_BUTTONS) or time.monotonic() >= waiting_until):
                return closed
            if time.monotonic() > deadline:
                raise AssertionError(f"could not close the viewer's banners: {[xpath for xpath, _ in shown]}")
            for xpath, button in shown:  # the tour first: its backdrop takes the banner's clicks
                seen.add(xpath)
                try:
                    button.click()
                    closed += 1
                    break
                except (ElementClickInterceptedException, StaleElementReferenceException):
                    continue
            time.sleep(0.25)

    def load_segmentation(self, modality: str = "SEG") -> list[dict]:
        """Double-click the study browser entry of ``modality``, answer "Yes" to "Do you want to open this
        Segmentation?", and wait until OHIF holds the segmentation; returns ``segmentations()``."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        entry = self.wait(lambda _: next((e for e in self.thumbnails() if modality in e.text.split("\n")), None),
                          f"a {modality} entry in the study browser")
        ActionChains(self.driver).double_click(entry).perform()
        yes = self.wait(lambda driver: next((e for e in driver.find_elements(By.CSS_SELECTOR,
                                                                             "[data-cy=yes-hydrate-btn]")
                                             if e.is_displayed()), None),
                        '"Do you want to open this Segmentation?" and its "Yes"')
        yes.click()
        return self.wait(lambda _: self.segmentations(), "a segmentation loaded in OHIF")

    def segmentations(self) -> list[dict]:
        return self.driver.execute_script(_JS_SEGMENTATIONS)

    def display_sets(self) -> list[dict]:
        return self.driver.execute_script(_JS_DISPLAY_SETS)

    def segment_label_shown(self, label: str):
        """The segmentation panel's element showing ``label`` (the panel is opened when closed)."""
        from selenium.webdriver.common.by import By

        xpath = f"//*[normalize-space(text())='{label}']"

        def shown(driver):
            return next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None)

        if shown(self.driver) is None:
            self.driver.find_element(By.CSS_SELECTOR, "[data-cy=panelSegmentation-btn]").click()
        return self.wait(shown, f'segment label "{label}" in the segmentation panel')

    def scroll_to(self, index: int) -> dict:
        """Mouse-wheel over the (first) viewport, one slice a notch, until image ``index`` of its image ids shows.
        A notch that moved away from it turns the wheel round: a volume viewport (MPR) may look along the stack
        the other way."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
        from selenium.webdriver.common.by import By

        pane = self.driver.find_element(By.CSS_SELECTOR, "[data-cy=viewport-pane]")
        wheel = 100
        for _ in range(4 * len(self.wait_for_image()["imageIds"])):
            current = self.wait_for_image()["index"]
            if current == index:
                return self.wait_for_image()
            ActionChains(self.driver).scroll_from_origin(ScrollOrigin.from_element(pane), 0,
                                                         wheel if index > current else -wheel).perform()
            moved = self.wait(lambda _, current=current: (i := self.wait_for_image()["index"]) != current and [i],
                              f"the viewport to leave image {current}", timeout=20)[0]
            if abs(index - moved) > abs(index - current):
                wheel = -wheel
        raise AssertionError(f"could not scroll the viewport to image {index}")

    def stable_screenshot(self, settle_s: float = 0.5) -> tuple[bytes, dict]:
        """A PNG of the page once two screenshots ``settle_s`` apart are identical and the viewport did not move,
        with the viewport geometry it shows."""
        import time

        previous = None

        def settled(_):
            nonlocal previous
            geometry = self.viewport()
            png = self.driver.get_screenshot_as_png()
            current = (png, geometry)
            if previous is not None and previous == current:
                return current
            previous = current
            time.sleep(settle_s)
            return None

        return self.wait(settled, "the viewport to stop changing")


# --- the MONAI Label panel of the OHIF that MONAI Label serves (/ohif/monai-label) --------------------------------

# voxels of labelmap segmentation '1', the one the panel creates on connecting and fills with each result
_JS_LABELMAP_VOXELS = """
const volume = window.services.segmentationService.getLabelmapVolume('1');
if (!volume) { return null; }
return volume.voxelManager.getCompleteScalarDataArray().reduce((n, v) => n + (v !== 0 ? 1 : 0), 0);
"""


class MonaiLabelPanel:
    """The MONAI Label panel (right side of the ``monai-label`` mode) in an ``OhifPage``, used as a person does:
    type the server's address, connect, pick a model in "Auto-Segmentation" and press "Run"."""

    def __init__(self, page: OhifPage) -> None:
        self.page = page
        self.driver = page.driver

    def connect(self, server_url: str) -> None:
        """Type ``server_url`` into "Server:", press the connect button beside it and wait until the panel lists
        its actions (it asks ``/info/`` and creates the empty labelmap segmentation '1')."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        field = self.page.wait(lambda d: d.find_element(By.ID, "monailabelServerURL"), 'the panel\'s "Server:" field')
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(server_url)
        # the field re-renders when it loses focus: find the button afresh
        self.driver.find_element(By.XPATH, "//input[@id='monailabelServerURL']/ancestor::tr[1]//button").click()
        self.page.wait(lambda _: self._visible("//label[normalize-space(.)='Auto-Segmentation']"),
                       "the panel's Auto-Segmentation tab after connecting")
        self.page.wait(lambda _: self.labelmap_voxels() is not None, "the panel's labelmap segmentation")

    def run_auto_segmentation(self, model: str) -> None:
        """Open "Auto-Segmentation", choose ``model`` and press "Run"; wait for the panel's notice that it
        succeeded (an ``AssertionError`` with its text when it says it failed)."""
        from selenium.webdriver.support.ui import Select

        self._visible("//label[normalize-space(.)='Auto-Segmentation']").click()
        tab = "//label[normalize-space(.)='Auto-Segmentation']/following-sibling::div[1]"
        Select(self.page.wait(lambda _: self._visible(f"{tab}//select"), "the model list")).select_by_value(model)
        self.page.wait(lambda _: self._visible(f"{tab}//button[@title='Run Segmentation']"), '"Run"').click()
        outcome = self.page.wait(
            lambda _: self._visible("//*[contains(text(), 'Running Segmentation - Successful')]")
            or self._visible("//*[contains(text(), 'Failed to Run Segmentation')]"),
            "the panel's notice that the segmentation ran", timeout=180)
        if "Failed" in outcome.text:
            raise AssertionError(f"the MONAI Label panel says: {outcome.text}")

    def labelmap_voxels(self) -> int | None:
        """Nonzero voxels of the panel's labelmap (``None`` before connecting)."""
        return self.driver.execute_script(_JS_LABELMAP_VOXELS)

    def _visible(self, xpath: str):
        from selenium.webdriver.common.by import By

        return next((e for e in self.driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None)


# --- where a segment is drawn in a screenshot ------------------------------------------------------------------------

# a screen pixel counts as drawn in a segment's colour when its colour minus its grey level points the way the
# segment colour's does (OHIF blends the fill at about half opacity over the image) with at least this share of it
_TINT_MIN = 0.25


def pixels_of(png: bytes) -> np.ndarray:
    """A PNG screenshot as float RGB ``[row, column, 3]``."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)


def tinted(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Screen pixels drawn in ``colour`` blended over grey: their chroma (RGB minus its mean) lies along the
    colour's, with at least ``_TINT_MIN`` of its strength and little off that direction."""
    chroma = pixels - pixels.mean(axis=-1, keepdims=True)
    reference = colour - colour.mean()
    strength = np.linalg.norm(reference)
    along = chroma @ (reference / strength)
    across = np.linalg.norm(chroma - along[..., None] * (reference / strength), axis=-1)
    return (along >= _TINT_MIN * strength) & (across <= 0.15 * strength)


def screen_mask(geometry: dict, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """Where ``mask`` (``[row, column]`` of the image shown) lands on the canvas: per screen pixel of the canvas
    whether its nearest image pixel is in the mask, whether it is on the image at all, and the canvas's slices of
    the page screenshot. ``geometry`` is ``OhifPage.viewport()``'s."""
    assert geometry["ratio"] == 1, "the screenshot is assumed at one device pixel per CSS pixel"
    left, top, width, height = (int(round(v)) for v in geometry["canvas"])
    origin = np.array(geometry["origin"], float)
    to_page = np.stack([np.array(geometry["column"], float) - origin, np.array(geometry["row"], float) - origin], 1)
    ys, xs = np.mgrid[top:top + height, left:left + width]
    offsets = np.stack([xs + 0.5 - origin[0], ys + 0.5 - origin[1]]).reshape(2, -1)
    column, row = np.rint(np.linalg.solve(to_page, offsets)).astype(int).reshape(2, height, width)
    on_image = (column >= 0) & (column < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
    expected = mask[row.clip(0, mask.shape[0] - 1), column.clip(0, mask.shape[1] - 1)] & on_image
    return expected, on_image, (slice(top, top + height), slice(left, left + width))


def instance_uid(image_id: str) -> str:
    """SOP instance UID in an OHIF WADO-RS image id (``wadors:.../instances/<uid>/frames/1``)."""
    return image_id.split("/instances/")[1].split("/")[0]
