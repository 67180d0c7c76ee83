"""The MONAI Label app: every bundle of this repository as one infer task and one train task.

MONAI Label finds the app through ``<app dir>/main.py`` (written by :mod:`monailabel_app.launch`). The bundles
are served from ``<app dir>/model/<bundle>/`` as MONAI Label expects: ``configs/`` there holds links to the
repository's ``bundles/<bundle>/configs`` files (the configs are read, never copied), ``models/`` holds the
weights and what training writes, so nothing a server run writes lands in the repository.

Server ``--conf`` keys:
    bundles_dir: folder of the bundles (default: the shipped bundles, see ``custom_networks.runtime.locate``).
    models: comma-separated bundle names to serve (default: every bundle with a ``configs/inference.json``).
    overrides: JSON file ``{bundle: {config id: value}}`` applied to the bundle's inference and train configs.

What a person sees: ``/info`` lists every bundle (``bundles``: whether it has weights, and how to get them where it
has none); a bad request to ``/infer`` is answered with a 4xx status whose ``detail`` is the project's one-line
reason (unknown model, with the closest name; a bundle without weights; unknown image; an image no bundle can
read); images in the studies folder that cannot be read are named in the log at start-up and left out of the
listing. Active learning: ``random``, ``first`` and ``flip_disagreement`` (the image the model is least sure of).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from custom_networks.clinical.errors import one_line
from custom_networks.errors import closest, find_input_error
from custom_networks.runtime.locate import bundles_dir as shipped_bundles_dir
from monailabel_app.bundles import bundle_names, link_bundle, read_overrides
from monailabel_app.strategies import FlipDisagreement
from monailabel_app.studies import CheckedLocalDatastore, dicom_hint
from monailabel_app.tasks import ProjectBundleInferTask, ProjectBundleTrainTask, demo_weights_sha256

__all__ = ["AttentionUNetsApp"]

logger = logging.getLogger(__name__)

class AttentionUNetsApp(MONAILabelApp):
    """This project's bundles served by MONAI Label (``--conf`` keys in the module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles_dir = Path(conf.get("bundles_dir") or shipped_bundles_dir())
        self.overrides = read_overrides(conf.get("overrides", ""), self.bundles_dir)
        self.served = {
            name: link_bundle(self.bundles_dir / name, Path(app_dir) / "model" / name)
            for name in bundle_names(self.bundles_dir, conf.get("models", ""))
        }
        self.infer_tasks: dict[str, ProjectBundleInferTask] = {}
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="attention-unets",
            description="Five attention U-Net bundles for interactive labelling and retraining",
            version="0.1.0",
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        # MONAI Label's own local datastore, with the same settings, leaving out unreadable images
        datastore = CheckedLocalDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )
        hint = dicom_hint(Path(self.studies), len(datastore.list_images()))
        if hint:
            logger.warning(hint)
        return datastore

    def init_infers(self) -> dict[str, InferTask]:
        for name, path in self.served.items():
            task = ProjectBundleInferTask(str(path), self.conf, self.overrides.get(name, {}),
                                          demo_weights_sha256(self.bundles_dir / name))
            if task.is_valid():
                self.infer_tasks[name] = task
            else:
                logger.warning(f"{name}: {self.how_to_get_weights(name)}")
        return dict(self.infer_tasks)

    def init_trainers(self) -> dict[str, TrainTask]:
        return {
            name: ProjectBundleTrainTask(str(path), self.conf, self.overrides.get(name, {}),
                                         Path(self.app_dir) / "training-slices" / name)
            for name, path in self.served.items()
        }

    def init_strategies(self) -> dict[str, Strategy]:
        flips = FlipDisagreement(self.bundles_with_weights, self.overrides)
        return {"random": Random(), "first": First(), "flip_disagreement": flips}

    def bundles_with_weights(self) -> dict[str, Path]:
        """Served bundle -> its folder, for those with ``models/model.pt`` now (training may have written one)."""
        return {name: path for name, path in self.served.items() if (path / "models" / "model.pt").is_file()}

    def how_to_get_weights(self, name: str) -> str:
        """One line for a served bundle without ``models/model.pt``."""
        demo = self.bundles_dir / name / "models" / "demo_model.pt"
        demo_hint = f" (its demo weights, for a pipeline check only: {demo})" if demo.is_file() else ""
        return (f"no weights yet ({self.served[name] / 'models' / 'model.pt'}); start the server with --weights "
                f"{name}=FILE{demo_hint}, or save labels and train it (POST /train/{name})")

    def info(self) -> dict:
        info = super().info()
        info["bundles"] = {
            name: {"weights": True} if name in self.infer_tasks else
            {"weights": False, "how_to_get_weights": self.how_to_get_weights(name)}
            for name in self.served
        }
        return info

    def infer(self, request, datastore=None) -> dict:
        """MONAI Label's ``infer``, with bad requests answered by a 4xx and the one-line reason (``detail``):
        MONAI Label's endpoint turns every other exception into a bare 500."""
        self._check_infer_request(request, datastore or self.datastore())
        try:
            return super().infer(request, datastore)
        except Exception as error:
            found = find_input_error(error)
            if found is None:
                raise
            logger.warning(f"infer {request.get('model')}: {one_line(found)}")
            raise HTTPException(status_code=422, detail=one_line(found)) from error

    def _check_infer_request(self, request: dict, datastore: Datastore) -> None:
        model = request.get("model") or ""
        if model in self.served and model not in self.infer_tasks:
            raise HTTPException(status_code=409, detail=f"model {model}: {self.how_to_get_weights(model)}")
        if model not in self.infer_tasks:
            hint = closest(model, list(self.served))
            also = f"did you mean {hint}?" if hint else f"served: {', '.join(self.served)}"
            raise HTTPException(status_code=404, detail=f"model {model}: no such model; {also}")
        image = request.get("image")
        if isinstance(datastore, LocalDatastore) and isinstance(image, str) and not os.path.exists(image) \
                and not datastore.get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"image {image}: no such image in the studies folder "
                                f"{self.studies}")
