"""Unit tests of what the bundles add to MONAI: mask union, in-plane resize, curves PNG, HD95 and metric reports,
input checks."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import HausdorffDistanceMetric
from monai.transforms import AsDiscrete, AsDiscreted, Compose, Invertd, LoadImaged
from PIL import Image

from custom_networks.data.bundle_inputs import INPUT_ERROR, BundleInputError, image_channels, load_datalist
from custom_networks.handlers import MetricsReportSaver, TrainingCurvesSaver
from custom_networks.metrics import HausdorffDistanceNaNMetric
from custom_networks.transforms import (
    ChannelArgmaxd,
    ResizeInPlane,
    ResizeInPlaned,
    UnionMaskChannels,
    UnionMaskChannelsd,
)

from conftest import add_volume, make_demo_task


def test_channel_argmax_equals_monai_argmax_ties_included_and_keeps_meta():
    scores = torch.randint(0, 3, (3, 7, 5, 4)).float()  # small integers: many ties between channels
    scores[:, 0, 0, 0] = 1.0
    image = MetaTensor(scores, affine=torch.diag(torch.tensor([0.8, 1.2, 3.0, 1.0])), meta={"filename_or_obj": "x"})
    out = ChannelArgmaxd("pred")({"pred": image})["pred"]
    expected = AsDiscrete(argmax=True)(scores)
    assert out.shape == (1, 7, 5, 4) and out.dtype == expected.dtype
    torch.testing.assert_close(out.as_tensor(), torch.as_tensor(expected))
    assert out[0, 0, 0, 0] == 0
    torch.testing.assert_close(out.affine, image.affine)
    assert out.meta["filename_or_obj"] == "x"


def test_union_of_montgomery_left_and_right_masks(tmp_path):
    task = make_demo_task(tmp_path, "montgomery", n=5, size=48)
    item = {
        key: [str(task.root / p) for p in value] if isinstance(value, list) else str(task.root / value)
        for key, value in task.datalist["training"][0].items()
    }
    loaded = Compose([LoadImaged(["image", "label"], ensure_channel_first=True), UnionMaskChannelsd("label")])(item)
    left, right = (np.asarray(Image.open(path)) for path in item["label"])
    assert loaded["label"].shape == (1, 48, 48)
    # PIL arrays are (rows, columns); MONAI's PILReader returns (columns, rows)
    expected = ((left > 0) | (right > 0)).T.astype(np.float32)
    np.testing.assert_array_equal(loaded["label"][0].numpy(), expected)
    assert 0 < expected.sum() < expected.size


@pytest.mark.parametrize("threshold, expected", [(0.5, [[0, 1, 1, 1]]), (200, [[0, 0, 1, 1]])])
def test_union_mask_channels_threshold_is_at_or_above(threshold, expected):
    mask = torch.tensor([[[0, 128, 200, 255]], [[0, 0, 0, 255]]], dtype=torch.float32)
    out = UnionMaskChannels(threshold)(mask)
    assert out.shape == (1, 1, 4) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[0].numpy(), expected)
    np.testing.assert_array_equal(UnionMaskChannels(threshold)(mask.numpy()), out.numpy())


@pytest.mark.parametrize("shape, expected", [((2, 40, 30), (2, 16, 24)), ((1, 40, 30, 5), (1, 16, 24, 5))])
def test_resize_in_plane_keeps_depth_and_inverts(shape, expected):
    image = MetaTensor(torch.rand(shape), affine=torch.diag(torch.tensor([0.8, 1.2, 3.0, 1.0])))
    resize = Compose([ResizeInPlaned("image", (16, 24), mode="bilinear")])
    item = resize({"image": image})
    assert tuple(item["image"].shape) == expected
    assert torch.allclose(item["image"].affine[0, 0], torch.tensor(0.8 * 40 / 16, dtype=torch.float64))
    item["pred"] = item["image"].clone()
    restored = Invertd("pred", resize, orig_keys="image", nearest_interp=False)(item)
    assert restored["pred"].shape == image.shape
    torch.testing.assert_close(restored["pred"].affine, image.affine)


def test_resize_in_plane_rejects_1d():
    with pytest.raises(ValueError, match="spatial dims"):
        ResizeInPlane((4, 4))(torch.rand(1, 8))


def test_training_curves_png_holds_loss_and_validation_metrics(tmp_path):
    losses = iter([1.0, 0.8, 0.6, 0.5])
    # MONAI's SupervisedTrainer leaves a decollated list of per-sample dicts in state.output
    trainer = Engine(lambda engine, batch: [{"loss": next(losses)}])
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.COMPLETED)
    def set_metrics(engine):
        engine.state.metrics = {"val_mean_dice": 0.5 + 0.1 * trainer.state.epoch, "val_hd95": 9.0}

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run([0]))
    curves = TrainingCurvesSaver(tmp_path / "plots" / "curves.png", evaluator=evaluator)
    curves.attach(trainer)
    trainer.run([0, 1], max_epochs=2)
    assert [value for _, value in curves.loss] == [1.0, 0.8, 0.6, 0.5]
    assert curves.metrics["val_mean_dice"] == [(2, pytest.approx(0.6)), (4, pytest.approx(0.7))]
    with Image.open(tmp_path / "plots" / "curves.png") as image:
        assert image.format == "PNG" and image.size[1] > image.size[0]


def _write(path: Path, mode: str, size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def test_image_channels_from_headers(tmp_path):
    assert image_channels(_write(tmp_path / "g.png", "L")) == 1
    assert image_channels(_write(tmp_path / "c.jpg", "RGB")) == 3
    assert image_channels(_write(tmp_path / "a.png", "RGBA")) == 4
    assert image_channels(_write(tmp_path / "t.tif", "RGB")) == 3
    assert image_channels(add_volume(tmp_path, channels=1, shape=(4, 4, 2), name="v.nii.gz")) == 1
    assert image_channels(add_volume(tmp_path, channels=3, shape=(4, 4, 2), name="v3.nii.gz")) == 3


def _datalist(folder: Path, content: dict) -> Path:
    path = folder / "datalist.json"
    path.write_text(json.dumps(content))
    return path


def _expect_input_error(call, *parts: str) -> str:
    """The call raises a BundleInputError, which ``except Exception`` in a host process (MONAI Label) catches."""
    try:
        call()
    except Exception as error:
        assert isinstance(error, BundleInputError), repr(error)
        message = str(error)
    else:
        raise AssertionError("no BundleInputError raised")
    assert message.startswith(f"{INPUT_ERROR}: ") and "\n" not in message
    for part in parts:
        assert part in message
    return message


def test_load_datalist_resolves_paths_and_checks_channels(tmp_path):
    image, label = _write(tmp_path / "images" / "1.png", "L"), _write(tmp_path / "masks" / "1.png", "L")
    datalist = _datalist(tmp_path, {"training": [{"image": "images/1.png", "label": "masks/1.png"}]})
    assert load_datalist(tmp_path, datalist, "training", 1) == [{"image": str(image), "label": str(label)}]
    _expect_input_error(
        lambda: load_datalist(tmp_path, datalist, "training", 3), str(image), "1 channel(s)", "expects 3"
    )
    _expect_input_error(lambda: load_datalist(tmp_path, datalist, "validation", 1), "no 'validation' items")


def test_load_datalist_reports_missing_and_empty_folders_and_files(tmp_path):
    missing = tmp_path / "missing"
    _expect_input_error(
        lambda: load_datalist(missing, missing / "d.json", "training", 1), str(missing), "does not exist"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_input_error(lambda: load_datalist(empty, empty / "d.json", "training", 1), str(empty), "is empty")
    folder = tmp_path / "data"
    _write(folder / "images" / "1.png", "L")
    _expect_input_error(
        lambda: load_datalist(folder, folder / "d.json", "training", 1),
        str(folder),
        "no datalist could be built",
        "no known dataset layout",
    )
    datalist = _datalist(folder, {"training": [{"image": "images/2.png", "label": "masks/1.png"}]})
    _expect_input_error(lambda: load_datalist(folder, datalist, "training", 1), "masks/1.png", "not found")
    _write(folder / "masks" / "1.png", "L")
    _expect_input_error(lambda: load_datalist(folder, datalist, "training", 1), "images/2.png", "file not found")
    (folder / "datalist.json").write_text("{not json")
    _expect_input_error(lambda: load_datalist(folder, datalist, "training", 1), "not a readable JSON datalist")


def test_load_datalist_builds_from_the_layout_without_a_datalist_file(tmp_path):
    task = make_demo_task(tmp_path, "brain_tumor", n=10, size=32, write_file=False)
    assert not task.datalist_file.exists()
    for split in ("training", "validation", "testing"):
        items = load_datalist(task.root, task.datalist_file, split, 1)
        expected = [
            {"image": str(task.root / i["image"]), "label": str(task.root / i["label"])} for i in task.datalist[split]
        ]
        assert items == expected
    assert [len(task.datalist[split]) for split in ("training", "validation", "testing")] == [7, 2, 1]


def test_load_datalist_k_fold_validation_is_the_chosen_fold(tmp_path):
    for name in ("a", "b", "c"):
        _write(tmp_path / "images" / f"{name}.png", "L")
        _write(tmp_path / "masks" / f"{name}.png", "L")
    training = [{"image": f"images/{n}.png", "label": f"masks/{n}.png", "fold": k} for k, n in enumerate("abc")]
    datalist = _datalist(tmp_path, {"training": training, "testing": []})
    assert [Path(i["image"]).stem for i in load_datalist(tmp_path, datalist, "validation", 1, fold=1)] == ["b"]
    assert [Path(i["image"]).stem for i in load_datalist(tmp_path, datalist, "training", 1, fold=1)] == ["a", "c"]
    _expect_input_error(lambda: load_datalist(tmp_path, datalist, "testing", 1), "no 'testing' items")


def test_load_datalist_checks_both_montgomery_masks(tmp_path):
    _write(tmp_path / "CXR_png" / "a.png", "L")
    _write(tmp_path / "ManualMask" / "leftMask" / "a.png", "L")
    item = {"image": "CXR_png/a.png", "label": ["ManualMask/leftMask/a.png", "ManualMask/rightMask/a.png"]}
    datalist = _datalist(tmp_path, {"training": [item]})
    _expect_input_error(lambda: load_datalist(tmp_path, datalist, "training", 1), "rightMask/a.png", "not found")


def test_load_datalist_reports_an_unreadable_image(tmp_path):
    broken = _write(tmp_path / "images" / "x.png", "L")
    broken.write_bytes(b"not a png")
    label = _write(tmp_path / "masks" / "x.png", "L")
    datalist = _datalist(tmp_path, {"training": [{"image": "images/x.png", "label": str(label)}]})
    _expect_input_error(lambda: load_datalist(tmp_path, datalist, "training", 1), "x.png", "not a readable image")


def test_hd95_of_no_measurable_case_is_nan_and_the_report_says_so(tmp_path, caplog):
    """Every prediction empty: HD95 is nan (MONAI's own reduction says 0.0, a perfect score), the metrics report
    names the metric and where it wrote, and NumPy's context-free warnings stay out."""
    empty = torch.zeros(1, 2, 16, 16)
    empty[:, 0] = 1
    label = empty.clone()
    label[:, :, 4:9, 4:9] = torch.tensor([0.0, 1.0])[:, None, None]
    plain = HausdorffDistanceMetric(include_background=False, percentile=95)
    plain(empty, label)
    assert plain.aggregate().item() == 0.0  # what MONAI reports
    ours = HausdorffDistanceNaNMetric(include_background=False, percentile=95)
    ours(empty, label)
    assert torch.isnan(ours.aggregate()).all()
    shifted = torch.roll(label, shifts=3, dims=3)
    for metric in (plain, ours):
        metric.reset()
        metric(shifted, label)
        metric(empty, label)
    assert ours.aggregate().item() == pytest.approx(plain.aggregate().item()) and ours.aggregate().item() > 0

    data = [{"image": MetaTensor(torch.zeros(1, 16, 16), meta={"filename_or_obj": f"case{i}.png"}),
             "label": label[0, 1:]} for i in range(2)]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=1),
        network=lambda image: torch.cat([torch.ones_like(image), torch.zeros_like(image)], dim=1),
        postprocessing=Compose([AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=2)]),
        key_val_metric={"test_hd95": IgniteMetricHandler(
            metric_fn=HausdorffDistanceNaNMetric(include_background=False, percentile=95),
            output_transform=from_engine(["pred", "label"]))},
        val_handlers=[MetricsReportSaver(save_dir=tmp_path, metrics="*", metric_details="*", summary_ops="*",
                                         batch_transform=lambda batch: [item["image"].meta for item in batch])],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with caplog.at_level(logging.INFO):
            evaluator.run()
    assert (tmp_path / "metrics.csv").read_text().strip() == "test_hd95,nan"
    assert "test_hd95: no case could be measured" in caplog.text
    assert f"metrics of 2 case(s) written to {tmp_path.resolve()}" in caplog.text
