"""The results of ``pacs-batch`` where a clinician looks: the OHIF viewer v3 in headless Chromium (issue 20).

A real Orthanc gets the sample MR series (a lesion in its middle slices), the batch job stores its DICOM SEG (and
SR) there, and OHIF 3.12.10 (npm's ``@ohif/app``, ``scripts/setup_ohif.sh``) served on 127.0.0.1 opens the study
through a same-origin proxy to Orthanc's DICOMweb. The test loads the SEG as a user does (double-click its entry in
the study browser, "Yes"), scrolls with the mouse wheel, and checks in screenshots that the segment is drawn in the
SEG's recommended colour on the viewer's pixels where the SEG's mask is, and nowhere on a slice the mask leaves
empty; that the segment's label shows in the segmentation panel; that the SR is listed; and that the browser console
has no error. WebGL2 runs on SwiftShader (software).

``UPDATE_DOCS_SCREENSHOT=1`` also writes the screenshot of the slice with the most tumour to
``docs/images/ohif_seg.png``; without it nothing is written into the repository.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
from scipy import ndimage

from custom_networks.cli import main
from custom_networks.data.sample_study import write_sample_study

from ohif_viewer import OhifPage, OhifServer, instance_uid, pixels_of, screen_mask, start_chromium, tinted
from orthanc_server import OrthancServer

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
BUNDLE = "brain_tumor_mri_gsconv_eca_unet"
DOCS_SCREENSHOT = REPO / "docs" / "images" / "ohif_seg.png"
# the segment's outline is drawn opaque: these pixels carry the colour itself, to this many levels per channel
_EXACT_TOLERANCE = 8
# screen pixels left at a mask boundary either way (the image is magnified several times, nearest-neighbour)
_EDGE_PX = 2


def orthanc_series(server: OrthancServer) -> dict[str, list[dict]]:
    """The PACS's series by modality: Orthanc id, main tags, instance ids."""
    found: dict[str, list[dict]] = {}
    for series_id in server.rest_get("/series"):
        series = server.rest_get(f"/series/{series_id}")
        modality = series["MainDicomTags"].get("Modality", "")
        found.setdefault(modality, []).append({"id": series_id, **series})
    return found


def download(server: OrthancServer, instance: str, path: Path) -> Path:
    response = requests.get(f"{server.url}/instances/{instance}/file", auth=server.auth, timeout=30)
    response.raise_for_status()
    path.write_bytes(response.content)
    return path


def segment_colour(seg: hd.seg.Segmentation, number: int = 1) -> np.ndarray:
    """The segment's recommended display colour, CIELab in the SEG, as RGB 0-255."""
    item = next(s for s in seg.SegmentSequence if s.SegmentNumber == number)
    return np.array(hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb(), float)


def exact(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.abs(pixels - colour).max(axis=-1) <= _EXACT_TOLERANCE


@pytest.fixture
def pacs_results(orthanc, tmp_path, monkeypatch) -> dict:
    """The sample MR study in a real Orthanc after ``pacs-batch`` ran on it: study UID, source headers, the SEG."""
    sample = write_sample_study(tmp_path / "study", seed=0)
    files = sorted(sample["dicom"].glob("*.dcm"))
    orthanc.upload(files)
    monkeypatch.setenv("PACS_USERNAME", orthanc.username)
    monkeypatch.setenv("PACS_PASSWORD", orthanc.password)
    assert main(["pacs-batch", "--pacs", orthanc.dicomweb_url, "--bundle", BUNDLE, "--demo", "--device", "cpu",
                 "--ledger", str(tmp_path / "jobs.sqlite"), "--report", str(tmp_path / "report")]) == 0
    series = orthanc_series(orthanc)
    assert len(series.get("SEG", [])) == 1, f"one SEG series expected in the PACS: {sorted(series)}"
    seg_file = download(orthanc, series["SEG"][0]["Instances"][0], tmp_path / "seg.dcm")
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    return {"study_uid": str(headers[0].StudyInstanceUID), "headers": headers, "seg": hd.seg.segread(seg_file),
            "series": series}


def test_ohif_draws_the_seg_where_the_mask_is(orthanc, pacs_results, tmp_path):
    seg: hd.seg.Segmentation = pacs_results["seg"]
    headers = pacs_results["headers"]
    uids = [str(header.SOPInstanceUID) for header in headers]
    # the SEG's own mask per source image, [image, row, column]
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                              assert_missing_frames_are_empty=True)[..., 0] != 0
    colour = segment_colour(seg)
    label = next(s.SegmentLabel for s in seg.SegmentSequence if s.SegmentNumber == 1)
    assert label == "tumor"
    areas = masks.sum(axis=(1, 2))
    tumour_image = int(np.argmax(areas))
    empty = np.flatnonzero(areas == 0)
    assert areas[tumour_image] > 200 and empty.size, f"mask areas per slice: {areas.tolist()}"
    # the mask-free slice nearest the tumour: an overlay drawn one slice off shows there
    empty_image = int(empty[np.argmin(np.abs(empty - tumour_image))])
    # pacs-batch stored the DICOM SR measurement report beside the SEG
    assert pacs_results["series"].get("SR"), f"no SR in the PACS: {sorted(pacs_results['series'])}"

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with OhifServer(orthanc.dicomweb_url, orthanc.auth) as viewer:
        driver = start_chromium(tmp_path / "chromium-profile", log_file=tmp_path / "chromedriver.log")
        page = OhifPage(driver)
        try:
            started = time.monotonic()
            page.open(viewer.viewer_url(pacs_results["study_uid"]))
            page.wait_for_thumbnails(3)
            shown = page.wait_for_image()
            assert len(shown["imageIds"]) == len(headers)
            page.dismiss_banners(wait_s=15)
            print(f"study open with its first image after {time.monotonic() - started:.1f} s")

            # the SEG, loaded as a user does
            segmentations = page.load_segmentation("SEG")
            print(f"SEG loaded after {time.monotonic() - started:.1f} s: {segmentations}")
            assert len(segmentations) == 1
            segments = segmentations[0]["segments"]
            assert [(s["number"], s["label"]) for s in segments] == [(1, label)]
            # drawn in the SEG's recommended colour, not a palette colour of the viewer's
            assert np.abs(np.array(segments[0]["color"][:3], float) - colour).max() <= 1, (segments, colour)
            page.segment_label_shown(label)

            # stack index of each source image: OHIF orders the stack itself
            image_ids = page.wait_for_image()["imageIds"]
            stack = {instance_uid(image_id): index for index, image_id in enumerate(image_ids)}
            for name, image in (("tumour", tumour_image), ("empty", empty_image)):
                page.scroll_to(stack[uids[image]])
                page.dismiss_banners()
                png, geometry = page.stable_screenshot()
                (shots / f"{name}.png").write_bytes(png)
                assert instance_uid(geometry["imageId"]) == uids[image]
                expected, on_image, (rows, columns) = screen_mask(geometry, masks[image])
                pixels = pixels_of(png)[rows, columns]
                drawn, outline = tinted(pixels, colour), exact(pixels, colour)
                grey = pixels[on_image & ~drawn].mean(axis=-1)
                print(f"{name} slice (source image {image}, stack {geometry['index']}): mask {int(expected.sum())} "
                      f"screen px, drawn {int(drawn.sum())} ({int((drawn & ~expected).sum())} off the mask, "
                      f"{int((expected & ~drawn).sum())} of the mask not), outline colour {int(outline.sum())}, "
                      f"grey std {grey.std():.1f}")
                assert grey.std() > 10, f"no MR image drawn on the {name} slice (see {shots / name}.png)"
                if name == "tumour":
                    inner = ndimage.binary_erosion(expected, iterations=_EDGE_PX)
                    near = ndimage.binary_dilation(expected, iterations=_EDGE_PX)
                    assert inner.sum() > 1000, "the tumour is too small on screen to judge"
                    # measured here: every mask pixel drawn, none beside (a mask one image pixel off: 1.6 % beside)
                    assert drawn[inner].mean() >= 0.99, f"segment not drawn over the mask ({shots / name}.png)"
                    assert (drawn & ~near).sum() <= 0.002 * drawn.sum(), \
                        f"segment drawn off the mask ({shots / name}.png)"
                    assert outline[near].sum() >= 100, "no pixel in the SEG's own colour (the outline)"
                    assert (outline & ~near).sum() <= 0.002 * outline.sum()
                else:
                    assert drawn.sum() <= 10 and outline.sum() == 0, \
                        f"segment colour on a slice without tumour ({shots / name}.png)"

            # the SR is listed in the study browser and handled by OHIF's SR plugin
            entries = page.thumbnail_texts()
            assert any("SR" in text.split("\n") for text in entries), entries
            sr_sets = [d for d in page.display_sets() if d["modality"] == "SR"]
            assert sr_sets and all("dicom-sr" in d["handler"] for d in sr_sets), sr_sets
            console = page.collect_console()
        except BaseException:
            print("requests served:", *viewer.requests[-40:], sep="\n  ")
            try:
                driver.save_screenshot(str(shots / "failure.png"))
                print(f"screenshot at failure: {shots / 'failure.png'}")
                print("browser console:", *page.collect_console(), sep="\n  ")
            except Exception as error:  # the browser itself may be gone
                print(f"no screenshot or console from the browser: {error}")
            raise
        finally:
            driver.quit()

    severe = [entry for entry in console if entry["level"] == "SEVERE"]
    assert not severe, "errors in the browser console:\n" + "\n".join(entry["message"] for entry in severe)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / "tumour.png", DOCS_SCREENSHOT)
        print(f"wrote {DOCS_SCREENSHOT}")
