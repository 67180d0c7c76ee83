"""The DIMSE client against a real Orthanc: C-FIND with filters, C-GET and C-MOVE retrieves equal to the stored
files, C-STORE back and the IMAGE-level check, the errors a batch must tell apart (unregistered AE, PACS down, PACS
silent, storage port taken), and the whole batch command over DIMSE with C-MOVE."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage, Verification

import custom_networks.pacs.dimse as dimse
from custom_networks.cli import main
from custom_networks.clinical.seg_writer import deterministic_seg_uids
from custom_networks.data.sample_study import make_sample_study
from custom_networks.errors import InputError
from custom_networks.pacs.client import PacsAuthError, PacsError, QueryFilters, SeriesRef, TransientPacsError
from custom_networks.pacs.dimse import DimseClient
from custom_networks.runtime import prepare_bundle

from clinical_fixtures import Study, write_series
from orthanc_server import free_port

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "brain_tumor_mri_gsconv_eca_unet"


def client(orthanc, retrieve: str = "get", **kwargs) -> DimseClient:
    """The client as a batch job opens it: our AE title, Orthanc's port, our storage SCP on the registered port."""
    options = {"calling_aet": orthanc.client_aet, "storage_port": orthanc.client_port, "timeout": 10.0, **kwargs}
    return DimseClient(orthanc.aet, "127.0.0.1", orthanc.dicom_port, retrieve=retrieve, **options)


def volume(seed: int, slices: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2000, (size, size, slices)).astype(np.int16)


def compressed_copy(files: list[Path], folder: Path, syntax: str) -> list[Path]:
    """The same instances (same UIDs) with Pixel Data compressed to ``syntax``."""
    folder.mkdir(parents=True)
    out = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        out.append(folder / path.name)
        ds.save_as(out[-1])
    return out


@pytest.fixture
def pacs(orthanc, tmp_path):
    """Orthanc holding two studies: study 1 (2026-03-15, accession ACC1) with MR "T1 axial" (6 slices), MR "FLAIR"
    (4) and CT "T1 lookalike" (3); study 2 (2025-06-01, ACC2) with MR "t1 sagittal" (5), JPEG 2000 compressed."""
    study1, study2 = Study(), Study()
    first = {"StudyDate": "20260315", "AccessionNumber": "ACC1"}
    second = {"StudyDate": "20250601", "AccessionNumber": "ACC2"}
    series = {
        "t1": write_series(tmp_path / "t1", volume(0, 6), study=study1, description="T1 axial", attributes=first),
        "flair": write_series(tmp_path / "flair", volume(1, 4), study=study1, description="FLAIR", attributes=first),
        "ct": write_series(tmp_path / "ct", volume(2, 3), modality="CT", study=study1, description="T1 lookalike",
                           attributes=first),
        "sag": write_series(tmp_path / "sag", volume(3, 5, 64), study=study2, description="t1 sagittal",
                            attributes=second),
    }
    series["sag"].files = compressed_copy(series["sag"].files, tmp_path / "sag_j2k", JPEG2000Lossless)
    for written in series.values():
        orthanc.upload(written.files)
    return series


def uids(refs: list[SeriesRef]) -> set[str]:
    return {ref.series_uid for ref in refs}


def test_find_series_applies_every_filter(orthanc, pacs):
    """Each filter alone and combined returns exactly the series it should; a query nothing matches is []."""
    t1, flair, ct, sag = (pacs[k].series_instance_uid for k in ("t1", "flair", "ct", "sag"))
    study1, study2 = pacs["t1"].study.study_instance_uid, pacs["sag"].study.study_instance_uid
    pacs_client = client(orthanc)
    assert uids(pacs_client.find_series(QueryFilters())) == {t1, flair, ct, sag}
    assert uids(pacs_client.find_series(QueryFilters(modality="MR"))) == {t1, flair, sag}
    assert uids(pacs_client.find_series(QueryFilters(modality="CT"))) == {ct}
    # fnmatch, case-insensitive: "t1*" matches "T1 axial" and "t1 sagittal", not "FLAIR"; the CT one is out by modality
    assert uids(pacs_client.find_series(QueryFilters(modality="MR", series_description="t1*"))) == {t1, sag}
    assert uids(pacs_client.find_series(QueryFilters(study_date=("20260101", "20261130")))) == {t1, flair, ct}
    assert uids(pacs_client.find_series(QueryFilters(study_date=("20250101", "20251231")))) == {sag}
    assert uids(pacs_client.find_series(QueryFilters(accession_numbers=("ACC2",)))) == {sag}
    assert uids(pacs_client.find_series(QueryFilters(accession_numbers=("ACC1", "ACC2"), modality="MR"))) == {
        t1, flair, sag}
    assert uids(pacs_client.find_series(QueryFilters(study_uids=(study1, study2), series_description="FLAIR"))) == {
        flair}
    # both study-level lists given: a study must be on both
    assert pacs_client.find_series(QueryFilters(study_uids=(study1,), accession_numbers=("ACC2",))) == []
    assert pacs_client.find_series(QueryFilters(study_date=("20200101", "20201231"))) == []
    t1_ref = next(ref for ref in pacs_client.find_series(QueryFilters(series_description="T1 AXIAL")))
    assert (t1_ref.study_uid, t1_ref.modality, t1_ref.series_description, t1_ref.n_instances) == (
        study1, "MR", "T1 axial", 6)


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_retrieve_writes_the_stored_instances(orthanc, pacs, tmp_path, retrieve):
    """C-GET and C-MOVE write one file per instance, named by its SOPInstanceUID, with the original UIDs and pixel
    data; a JPEG 2000 series arrives in its own transfer syntax and decodes to the original pixels."""
    with client(orthanc, retrieve) as pacs_client:
        refs = {ref.series_uid: ref for ref in pacs_client.find_series(QueryFilters())}
        for key in ("t1", "sag"):
            written = pacs[key]
            folder = tmp_path / f"{retrieve}_{key}"
            paths = pacs_client.retrieve_series(refs[written.series_instance_uid], folder)
            originals = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, written.files)}
            assert sorted(p.name for p in folder.iterdir()) == sorted(f"{uid}.dcm" for uid in originals)
            assert len(paths) == len(originals)
            for path in paths:
                got = pydicom.dcmread(path)
                original = originals[got.SOPInstanceUID]
                assert path.name == f"{got.SOPInstanceUID}.dcm"
                assert (got.SeriesInstanceUID, got.StudyInstanceUID) == (
                    written.series_instance_uid, written.study.study_instance_uid)
                assert got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
                np.testing.assert_array_equal(got.pixel_array, original.pixel_array)


def test_store_is_confirmed_by_an_image_query_and_never_duplicates(orthanc, pacs, tmp_path):
    """C-STORE of a new (RLE-compressed) series: has_instance is true for each instance, false for an unknown one;
    storing the same files again leaves Orthanc's instance count unchanged; they come back as stored (RLE)."""
    new = write_series(tmp_path / "new", volume(7, 3), study=pacs["t1"].study, description="result")
    files = compressed_copy(new.files, tmp_path / "new_rle", RLELossless)
    before = orthanc.instance_count()
    study_uid = new.study.study_instance_uid
    pacs_client = client(orthanc)
    for path in files:
        assert not pacs_client.has_instance(study_uid, new.series_instance_uid, pydicom.dcmread(path).SOPInstanceUID)
    pacs_client.store(files)
    assert orthanc.instance_count() == before + 3
    for path in files:
        assert pacs_client.has_instance(study_uid, new.series_instance_uid, pydicom.dcmread(path).SOPInstanceUID)
    assert not pacs_client.has_instance(study_uid, new.series_instance_uid, "1.2.3.4.5")
    pacs_client.store(files)
    assert orthanc.instance_count() == before + 3
    ref = SeriesRef(study_uid, new.series_instance_uid)
    back = pacs_client.retrieve_series(ref, tmp_path / "back")
    assert {pydicom.dcmread(path).file_meta.TransferSyntaxUID for path in back} == {RLELossless}


def test_every_socket_has_tcp_nodelay(orthanc, pacs, tmp_path, monkeypatch):
    """The EVT_CONN_OPEN handler sets TCP_NODELAY on the client's and the storage SCP's sockets (without it every
    instance waits about 40 ms for a delayed ACK)."""
    seen = []

    def recording(event):
        set_nodelay(event)
        seen.append(event.assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    set_nodelay = dimse._set_nodelay
    monkeypatch.setattr(dimse, "_set_nodelay", recording)
    with client(orthanc, "move") as pacs_client:
        ref = next(r for r in pacs_client.find_series(QueryFilters(series_description="FLAIR")))
        pacs_client.retrieve_series(ref, tmp_path / "flair")
    # find, image find, move, and the association Orthanc opened to the storage SCP
    assert len(seen) == 4 and all(seen)


def test_unregistered_calling_ae_is_a_clear_error(orthanc, pacs):
    """Orthanc aborts requests from an AE it does not list: an auth error naming the server and the AE, not []."""
    stranger = client(orthanc, calling_aet="STRANGER")
    with pytest.raises(PacsAuthError, match=rf"^ORTHANC@127\.0\.0\.1:{orthanc.dicom_port}: .*'STRANGER' registered"):
        stranger.find_series(QueryFilters())
    wrong_called = DimseClient("NOT-ORTHANC", "127.0.0.1", orthanc.dicom_port, calling_aet=orthanc.client_aet)
    rejected = r"^NOT-ORTHANC@.*association rejected .*Called AE title not recognised.*'NOT-ORTHANC' the PACS's AE"
    with pytest.raises(PacsAuthError, match=rejected):
        wrong_called.find_series(QueryFilters())


def test_stopped_pacs_is_transient(orthanc, pacs, tmp_path):
    """With Orthanc stopped every operation raises TransientPacsError (retried by the batch), one line naming the
    server; after a restart the same client works again."""
    pacs_client = client(orthanc)
    ref = pacs_client.find_series(QueryFilters(series_description="FLAIR"))[0]
    orthanc.stop()
    operations = {
        "find": lambda: pacs_client.find_series(QueryFilters()),
        "retrieve": lambda: pacs_client.retrieve_series(ref, tmp_path / "down"),
        "store": lambda: pacs_client.store(pacs["flair"].files),
        "has_instance": lambda: pacs_client.has_instance(ref.study_uid, ref.series_uid, "1.2.3"),
    }
    for name, operation in operations.items():
        with pytest.raises(TransientPacsError) as raised:
            operation()
        message = str(raised.value)
        assert message == f"ORTHANC@127.0.0.1:{orthanc.dicom_port}: connection refused or unreachable", name
    assert not list((tmp_path / "down").glob("*"))
    orthanc.start()
    assert len(pacs_client.retrieve_series(ref, tmp_path / "up")) == 4


def test_silent_peer_times_out_as_transient():
    """A peer that accepts the TCP connection and never answers: TransientPacsError after the timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    try:
        silent = DimseClient("SILENT", "127.0.0.1", listener.getsockname()[1], calling_aet="ATTUNETS", timeout=1.0)
        with pytest.raises(TransientPacsError, match=r"^SILENT@127\.0\.0\.1:\d+: association aborted or timed out"):
            silent.find_series(QueryFilters())
    finally:
        listener.close()
        for connection, _ in accepted:
            connection.close()


def test_peer_without_the_service_is_a_permanent_error(tmp_path):
    """A DICOM node (a pynetdicom SCP) that answers C-ECHO and stores MR images in Explicit VR Little Endian only:
    a query, or storing an RLE file, is a PacsError naming what it lacks, not a transient failure to retry."""
    node = AE(ae_title="ECHOONLY")
    node.add_supported_context(Verification)
    node.add_supported_context(MRImageStorage, ExplicitVRLittleEndian)
    received = []
    handlers = [(evt.EVT_C_STORE, lambda event: received.append(event.request.AffectedSOPInstanceUID) or 0)]
    port = free_port()
    server = node.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    plain = write_series(tmp_path / "plain", volume(5, 2)).files
    rle = write_series(tmp_path / "rle", volume(5, 2), transfer_syntax=RLELossless).files
    try:
        peer = DimseClient("ECHOONLY", "127.0.0.1", port, calling_aet="ATTUNETS", timeout=5.0)
        with pytest.raises(PacsError) as query:
            peer.find_series(QueryFilters())
        with pytest.raises(PacsError) as store:
            peer.store(plain + rle)
        refused_before_sending = list(received)
        peer.store(plain)  # what it does accept goes through
    finally:
        server.shutdown()
    assert not isinstance(query.value, TransientPacsError) and not isinstance(store.value, TransientPacsError)
    assert str(query.value) == (f"ECHOONLY@127.0.0.1:{port}: the PACS supports none of the proposed services "
                                "(Study Root Query/Retrieve Information Model - FIND)")
    assert str(store.value) == f"ECHOONLY@127.0.0.1:{port}: the PACS does not accept MR Image Storage in RLE Lossless"
    assert refused_before_sending == []  # checked before the first C-STORE: nothing half-stored
    assert received == [pydicom.dcmread(path).SOPInstanceUID for path in plain]


def test_storage_port_in_use_is_a_clear_error(orthanc, pacs, tmp_path):
    """A second job on the same storage port: a one-line error naming the address, no half-written files."""
    with client(orthanc, "move") as first, client(orthanc, "move") as second:
        ref = first.find_series(QueryFilters(series_description="FLAIR"))[0]
        first.retrieve_series(ref, tmp_path / "first")
        with pytest.raises(PacsError, match=rf"cannot listen on 127\.0\.0\.1:{orthanc.client_port}"):
            second.retrieve_series(ref, tmp_path / "second")
    assert not list((tmp_path / "second").glob("*"))


def report_reasons(report: Path) -> dict[str, str]:
    """Outcome and reason per series of a batch report (what a failed run assertion shows)."""
    rows = json.loads((report / "series.json").read_text())["series"] if (report / "series.json").is_file() else []
    return {row["series_uid"]: f'{row["outcome"]}: {row["reason"]}' for row in rows}


def test_c_move_without_a_storage_port_is_refused():
    """From Python the message names the parameters; on the command line the same refusal names the options."""
    with pytest.raises(InputError, match=r"^retrieve move: give storage_port=<port>") as refused:
        DimseClient("ORTHANC", "127.0.0.1", 4242, calling_aet="ATTUNETS", retrieve="move")
    assert refused.value.parameter == "retrieve"
    from custom_networks.cli import flag_message

    assert flag_message(refused.value).startswith("--retrieve move: give --storage-port <port>, the port")


def test_batch_command_over_dimse_with_c_move_round_trip(orthanc, tmp_path):
    """``attention-unets pacs-batch --pacs ORTHANC@127.0.0.1:<port> --retrieve move``: the SEG Orthanc then holds
    (read back by C-GET) references the source series, reads with highdicom and equals voxel for voxel the mask
    the bundle writes for the same series from a folder; a re-run adds no instance."""
    head = Study()
    chosen = write_series(tmp_path / "ax_t1", make_sample_study(shape=(96, 96, 8), seed=40).image,
                          spacing=(0.9, 0.9, 5.0), study=head, description="AX T1", shuffle_seed=None)
    shorter = write_series(tmp_path / "ax_t1_short", make_sample_study(shape=(96, 96, 5), seed=41).image,
                           spacing=(0.9, 0.9, 5.0), study=head, description="AX T1 short")
    orthanc.upload(chosen.files + shorter.files)
    args = ["pacs-batch", "--pacs", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}", "--calling-aet",
            orthanc.client_aet, "--retrieve", "move", "--storage-port", str(orthanc.client_port), "--bundle",
            str(BUNDLE), "--demo", "--device", "cpu", "--modality", "MR", "--series-description", "ax t1*",
            "--ledger", str(tmp_path / "jobs.sqlite"), "--report", str(tmp_path / "report")]
    assert main(args) == 0, report_reasons(tmp_path / "report")

    info = prepare_bundle(BUNDLE, demo=True, device="cpu")
    expected = deterministic_seg_uids(chosen.series_instance_uid, info.name, info.version, info.weights_sha256, 1)
    study_uid = head.study_instance_uid
    pacs_client = client(orthanc)
    assert pacs_client.has_instance(study_uid, expected.series_uid, expected.sop_uid)
    [seg_path] = pacs_client.retrieve_series(SeriesRef(study_uid, expected.series_uid), tmp_path / "seg_back")
    seg = hd.seg.segread(seg_path)
    assert seg.SOPInstanceUID == expected.sop_uid
    assert [item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence] == [chosen.series_instance_uid]
    source_uids = [str(pydicom.dcmread(path).SOPInstanceUID) for path in chosen.files]  # slice order
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=source_uids, segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)
    from_pacs = np.transpose(pixels[..., 0], (2, 1, 0)) != 0  # [column, row, slice], as the NIfTI mask
    output = tmp_path / "folder_run"
    assert main(["infer", "--bundle", str(BUNDLE), "--demo", "--device", "cpu", "--input",
                 str(tmp_path / "ax_t1"), "--output", str(output)]) == 0
    from_folder = np.asarray(nib.load(output / "ax_t1_seg.nii.gz").dataobj) != 0
    assert from_pacs.any() and from_pacs.shape == (96, 96, 8)
    np.testing.assert_array_equal(from_pacs, from_folder)

    before = orthanc.instance_count()
    assert main(args) == 0, report_reasons(tmp_path / "report")
    assert orthanc.instance_count() == before
    rows = json.loads((tmp_path / "report" / "series.json").read_text())["series"]
    outcomes = {row["series_uid"]: row["outcome"] for row in rows}
    assert outcomes == {chosen.series_instance_uid: "already done", shorter.series_instance_uid: "skipped"}
