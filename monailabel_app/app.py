"""The MONAI Label app: every bundle of this repository as one infer task and one train task.

MONAI Label finds the app through ``<app dir>/main.py`` (written by :mod:`monailabel_app.launch`). The bundles
are served from ``<app dir>/model/<bundle>/`` as MONAI Label expects: ``configs/`` there holds links to the
repository's ``bundles/<bundle>/configs`` files (the configs are read, never copied), ``models/`` holds the
weights and what training writes, so nothing a server run writes lands in the repository.

Server ``--conf`` keys:
    bundles_dir: folder of the bundles (default: the shipped bundles, see ``custom_networks.runtime.locate``).
    models: comma-separated bundle names to serve (default: every bundle with a ``configs/inference.json``).
    overrides: JSON file ``{bundle: {config id: value}}`` applied to the bundle's inference and train configs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from custom_networks.runtime.locate import bundles_dir as shipped_bundles_dir
from monailabel_app.bundles import bundle_names, link_bundle, read_overrides
from monailabel_app.tasks import ProjectBundleInferTask, ProjectBundleTrainTask

__all__ = ["AttentionUNetsApp"]

logger = logging.getLogger(__name__)

class AttentionUNetsApp(MONAILabelApp):
    """This project's bundles served by MONAI Label (``--conf`` keys in the module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        bundles_dir = Path(conf.get("bundles_dir") or shipped_bundles_dir())
        self.overrides = read_overrides(conf.get("overrides", ""), bundles_dir)
        self.served = {
            name: link_bundle(bundles_dir / name, Path(app_dir) / "model" / name)
            for name in bundle_names(bundles_dir, conf.get("models", ""))
        }
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="attention-unets",
            description="Five attention U-Net bundles for interactive labelling and retraining",
            version="0.1.0",
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers = {}
        for name, path in self.served.items():
            task = ProjectBundleInferTask(str(path), self.conf, self.overrides.get(name, {}))
            if task.is_valid():
                infers[name] = task
            else:
                logger.warning(f"{name}: no {path / 'models' / 'model.pt'} yet; served for training only")
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {
            name: ProjectBundleTrainTask(str(path), self.conf, self.overrides.get(name, {}))
            for name, path in self.served.items()
        }
