"""What each paper's ablation study trains: its network with each switch off, the plain baseline from the same
code, MONAI's stock networks at comparable widths, and the claims to check with their metric and the paper's
own figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product

__all__ = [
    "BASELINE",
    "Claim",
    "STOCK_NETWORKS",
    "STUDIES",
    "Study",
    "Variant",
    "find_study",
    "stock_network_def",
]

# name of the all-switches-off variant of every study (the plain baseline from the paper network's own code)
BASELINE = "plain"
# MONAI networks trained beside every paper network, at the study's widths
STOCK_NETWORKS = ("monai_basicunet", "monai_unet", "monai_attentionunet")


@dataclass(frozen=True)
class Variant:
    """One network (and loss) setting of a study.

    Args:
        name: short name, used as folder name and table row.
        network: overrides of the bundle's ``network_def`` keys (switches); ignored for stock networks.
        config: other bundle config overrides (e.g. ``{"edge_weight": 1.0}`` for a joint loss).
        stock: name from ``STOCK_NETWORKS`` when the variant is a MONAI network replacing ``network_def``.
    """

    name: str
    network: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    stock: str | None = None


@dataclass(frozen=True)
class Claim:
    """One claim of a paper: ``variant`` beats ``baseline`` on ``metric``.

    Args:
        text: the claim in one line.
        variant: the variant claimed better.
        metric: "dice", "iou" or "hd95" (per-case metrics the paired test uses).
        paper: the paper's own figures for the claim, as printed.
        baseline: the variant it is compared with.
    """

    text: str
    variant: str
    metric: str
    paper: str
    baseline: str = BASELINE


@dataclass(frozen=True)
class Study:
    """A paper's ablation study.

    Args:
        key: paper number ("000" ... "004"), the study's folder name.
        title: network and task in words.
        bundle: bundle folder name in ``bundles/``.
        demo_task: the demo data writer whose layout the bundle reads (``custom_networks.data.demo``).
        variants: the paper network's variants, the full network first, ``BASELINE`` among them.
        claims: the claims to check.
        paper_file: name prefix of the paper text in ``shared/papers/``.
    """

    key: str
    title: str
    bundle: str
    demo_task: str
    variants: tuple[Variant, ...]
    claims: tuple[Claim, ...]
    paper_file: str

    def all_variants(self) -> tuple[Variant, ...]:
        """The paper network's variants followed by the stock MONAI networks."""
        return self.variants + tuple(Variant(name, stock=name) for name in STOCK_NETWORKS)

    def variant(self, name: str) -> Variant:
        for variant in self.all_variants():
            if variant.name == name:
                return variant
        names = ", ".join(v.name for v in self.all_variants())
        raise ValueError(f"study {self.key} has no variant {name!r}; its variants: {names}")


def stock_network_def(name: str, widths: Sequence[int]) -> dict:
    """``network_def`` of a MONAI stock network at ``widths`` (2D; channels from the bundle's config).

    ``BasicUNet`` always has five levels: ``widths`` are extended by doubling (or cut) to five, plus the
    last-level width ``widths[0]``. ``UNet`` gets two residual units per level (MONAI's tutorials' setting).
    """
    widths = [int(w) for w in widths]
    common = {"spatial_dims": 2, "in_channels": "@in_channels", "out_channels": "@num_classes"}
    strides = [2] * (len(widths) - 1)
    if name == "monai_basicunet":
        five = (widths + [widths[-1] * 2 ** (k + 1) for k in range(5)])[:5]
        return {"_target_": "monai.networks.nets.BasicUNet", **common, "features": five + [widths[0]]}
    if name == "monai_unet":
        return {"_target_": "monai.networks.nets.UNet", **common, "channels": widths, "strides": strides,
                "num_res_units": 2, "norm": "batch"}
    if name == "monai_attentionunet":
        return {"_target_": "monai.networks.nets.AttentionUnet", **common, "channels": widths, "strides": strides}
    raise ValueError(f"unknown stock network {name!r}; expected one of {', '.join(STOCK_NETWORKS)}")


def _sc_unext_variants() -> tuple[Variant, ...]:
    """Paper 004's table 2: every combination of edge loss, SC skip (with its CBAM) and pyramid fusion."""
    variants = []
    for edge, skip, fuse in product((True, False), repeat=3):
        parts = [name for name, on in (("edge", edge), ("skip", skip), ("fuse", fuse)) if on]
        variants.append(Variant(
            "_".join(parts) or BASELINE,
            network={"sc_skip": skip, "use_cbam": skip, "pyramid_fusion": fuse},
            config={"edge_weight": 1.0 if edge else 0.0},
        ))
    return tuple(variants)


STUDIES: dict[str, Study] = {
    study.key: study
    for study in (
        Study(
            "000", "GSConv-ECA U-Net, brain tumour MRI", "brain_tumor_mri_gsconv_eca_unet", "brain_tumor",
            # GSConv blocks in the bundle's form (with the GS bottleneck's shortcut, issue 22) unless "paper_form"
            (
                Variant("gsconv_eca", {"use_gsconv": True, "use_eca": True, "gsconv_shortcut": True}),
                Variant("gsconv_eca_paper_form", {"use_gsconv": True, "use_eca": True, "gsconv_shortcut": False}),
                Variant("eca_only", {"use_gsconv": False, "use_eca": True}),
                Variant("gsconv_only", {"use_gsconv": True, "use_eca": False, "gsconv_shortcut": True}),
                Variant(BASELINE, {"use_gsconv": False, "use_eca": False}),
            ),
            (
                Claim("GSConv + ECA segment edges better than U-Net (HD95 lower)", "gsconv_eca", "hd95",
                      "no table; 'better edges', test mIoU about 0.8"),
                Claim("GSConv + ECA segment better than U-Net (Dice higher)", "gsconv_eca", "dice",
                      "no table"),
                Claim("GSConv + ECA in the paper's form segment better than U-Net (Dice higher)",
                      "gsconv_eca_paper_form", "dice", "no table"),
            ),
            "000_",
        ),
        Study(
            "001", "CBAM U-Net, LGG brain MRI", "lgg_mri_cbam_unet", "lgg",
            # "cbam" is the bundle's form (x + CBAM(x), issue 22), "cbam_paper_form" the paper's x * gates
            (
                Variant("cbam", {"use_cbam": True, "residual_gates": True}),
                Variant("cbam_paper_form", {"use_cbam": True, "residual_gates": False}),
                Variant(BASELINE, {"use_cbam": False}),
            ),
            (
                Claim("CBAM after every conv block raises Dice over U-Net", "cbam", "dice",
                      "Dice 0.936 vs 0.915"),
                Claim("CBAM after every conv block raises IoU over U-Net", "cbam", "iou", "IoU 0.882 vs 0.854"),
                Claim("CBAM in the paper's form raises Dice over U-Net", "cbam_paper_form", "dice",
                      "Dice 0.936 vs 0.915"),
            ),
            "001_",
        ),
        Study(
            "002", "AG + Min-ASPP + GSConv U-Net, chest X-ray lungs", "chest_xray_lung_ag_min_aspp_unet",
            "montgomery",
            # GSConv blocks in the bundle's form (with the GS bottleneck's shortcut, issue 22) unless "paper_form"
            (
                Variant("full", {"conv_block": "gsconv", "use_aspp": True, "use_attention_gate": True,
                                 "gsconv_shortcut": True}),
                Variant("full_paper_form", {"conv_block": "gsconv", "use_aspp": True, "use_attention_gate": True,
                                            "gsconv_shortcut": False}),
                Variant("no_gsconv", {"conv_block": "standard", "use_aspp": True, "use_attention_gate": True}),
                Variant("no_aspp", {"conv_block": "gsconv", "use_aspp": False, "use_attention_gate": True,
                                    "gsconv_shortcut": True}),
                Variant("no_ag", {"conv_block": "gsconv", "use_aspp": True, "use_attention_gate": False,
                                  "gsconv_shortcut": True}),
                Variant(BASELINE, {"conv_block": "standard", "use_aspp": False, "use_attention_gate": False}),
            ),
            (
                Claim("AG + Min-ASPP + GSConv raise IoU over U-Net", "full", "iou",
                      "mIoU 86.91 vs 77.15; pixel accuracy 90.47 % vs 81.46 %"),
                Claim("AG + Min-ASPP + GSConv in the paper's form raise IoU over U-Net", "full_paper_form", "iou",
                      "mIoU 86.91 vs 77.15"),
            ),
            "002_",
        ),
        Study(
            "003", "attention Res-UNet, LGG brain MRI", "lgg_mri_attention_res_unet", "lgg",
            (
                Variant("ag", {"attention": "ag"}),
                Variant("se", {"attention": "se"}),
                Variant("cbam", {"attention": "cbam"}),
                Variant(BASELINE, {"attention": None}),
            ),
            (
                Claim("attention gates raise IoU of the Res-UNet", "ag", "iou", "AG best, mIoU 0.845"),
                Claim("SE blocks raise IoU of the Res-UNet", "se", "iou", "below AG (no plain row)"),
                Claim("CBAM raises IoU of the Res-UNet", "cbam", "iou", "below AG (no plain row)"),
            ),
            "003_",
        ),
        Study(
            "004", "SC-UNeXt, ISIC 2018 skin lesions", "isic2018_skin_sc_unext", "isic2018",
            _sc_unext_variants(),
            (
                Claim("edge loss + SC skip + fusion raise DSC over UNeXt", "edge_skip_fuse", "dice",
                      "DSC 87.29 vs 85.89 (5-fold mean)"),
                Claim("SC skip alone raises DSC over UNeXt", "skip", "dice", "DSC 86.53 vs 85.89"),
                Claim("pyramid fusion alone raises DSC over UNeXt", "fuse", "dice", "DSC 86.17 vs 85.89"),
                Claim("edge loss alone raises DSC over UNeXt", "edge", "dice", "DSC 86.14 vs 85.89"),
            ),
            "004_",
        ),
    )
}


def find_study(name: str) -> Study:
    """The study of paper number ``name`` ("000" ... "004", or "0" ... "4") or of bundle ``name``."""
    for study in STUDIES.values():
        if name in (study.key, study.bundle) or (name.isdigit() and int(name) == int(study.key)):
            return study
    known = ", ".join(f"{s.key} ({s.bundle})" for s in STUDIES.values())
    raise ValueError(f"unknown study {name!r}; expected a paper number or bundle: {known}")
