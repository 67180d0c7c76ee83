"""
Parameters, GMACs and median CPU latency of every network with its paper switches on and off, beside
MONAI's UNet, BasicUNet and AttentionUnet measured in the same process; prints a Markdown table and
writes it into docs/benchmarks.md.

    python scripts/profile_networks.py                 # full table (about 15 minutes on 2 cores)
    python scripts/profile_networks.py --quick         # 256 x 256 only, fewer repeats
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from monai.networks.nets import AttentionUnet, BasicUNet, UNet

from custom_networks import AGMinASPPUNet, AttentionResUNet, CBAMUNet, ClassicUNet, GSConvECAUNet, SCUNeXt, UNeXt
from custom_networks.profiling import count_macs, count_parameters, cpu_description, median_latency, replace_section

WIDE = (64, 128, 256, 512, 1024)
# (label, constructor, U-Net width? (also timed at 512 x 512), the paper's own figure)
MODELS = [
    ("ClassicUNet (plain, BN)", lambda: ClassicUNet(2, 3, 1), True, "31.03 M / 48.17 GMACs (no BN)"),
    ("GSConvECAUNet", lambda: GSConvECAUNet(2, 3, 1), True, "no numeric table"),
    ("GSConvECAUNet gsconv only", lambda: GSConvECAUNet(2, 3, 1, use_eca=False), True, ""),
    ("GSConvECAUNet eca only", lambda: GSConvECAUNet(2, 3, 1, use_gsconv=False), True, ""),
    ("CBAMUNet", lambda: CBAMUNet(2, 3, 1), True, "Dice 0.936 / IoU 0.882"),
    ("CBAMUNet off (= plain)", lambda: CBAMUNet(2, 3, 1, use_cbam=False), True, "U-Net 0.915 / 0.854"),
    ("AGMinASPPUNet", lambda: AGMinASPPUNet(2, 3, 1), True, "acc 90.47 % / mIoU 86.91"),
    ("AGMinASPPUNet gated", lambda: AGMinASPPUNet(2, 3, 1, conv_block="gated"), True, ""),
    ("AGMinASPPUNet standard conv", lambda: AGMinASPPUNet(2, 3, 1, conv_block="standard"), True, ""),
    ("AGMinASPPUNet off (= plain)",
     lambda: AGMinASPPUNet(2, 3, 1, conv_block="standard", use_aspp=False, use_attention_gate=False), True,
     "U-Net 81.46 % / 77.15"),
    ("AttentionResUNet ag", lambda: AttentionResUNet(2, 3, 1, attention="ag"), True, "~32 M, 127 MB, mIoU 0.845"),
    ("AttentionResUNet se", lambda: AttentionResUNet(2, 3, 1, attention="se"), True, ""),
    ("AttentionResUNet cbam", lambda: AttentionResUNet(2, 3, 1, attention="cbam"), True, ""),
    ("AttentionResUNet none", lambda: AttentionResUNet(2, 3, 1, attention=None), True, ""),
    ("UNeXt s", lambda: UNeXt(2, 3, 1, size="s"), False, "253,561 / 0.099 GMACs (ref. code)"),
    ("UNeXt base", lambda: UNeXt(2, 3, 1, size="base"), False, "1,471,921 / 0.562 GMACs (ref. code)"),
    ("SCUNeXt", lambda: SCUNeXt(2, 3, 1), False, "~249.5 k / 0.13 GMACs"),
    ("SCUNeXt no sc_skip", lambda: SCUNeXt(2, 3, 1, sc_skip=False), False, ""),
    ("SCUNeXt no CBAM", lambda: SCUNeXt(2, 3, 1, use_cbam=False), False, ""),
    ("SCUNeXt no PFM", lambda: SCUNeXt(2, 3, 1, pyramid_fusion=False), False, ""),
    ("MONAI UNet (64..1024, 2 res units)",
     lambda: UNet(2, 3, 1, channels=WIDE, strides=(2, 2, 2, 2), num_res_units=2), True, ""),
    ("MONAI BasicUNet (default)", lambda: BasicUNet(2, 3, 1), True, "1.98 M / 4.98 GMACs"),
    ("MONAI AttentionUnet (64..1024)", lambda: AttentionUnet(2, 3, 1, channels=WIDE, strides=(2, 2, 2, 2)), True,
     "31.74 M / 42.27 GMACs"),
]


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    for label, make, wide, paper in MODELS:
        torch.manual_seed(0)
        net = make().eval()
        row = {"label": label, "params": count_parameters(net), "gmacs": count_macs(net, (1, 3, 256, 256)) / 1e9,
               "paper": paper}
        row["t256"] = median_latency(net, (1, 3, 256, 256), args.threads, args.warmup, args.repeats)
        if wide and not args.quick:
            row["t512"] = median_latency(net, (1, 3, 512, 512), args.threads, 1, max(3, args.repeats // 2))
        rows.append(row)
        print(f"{label:40s} {row['params']:>12,d} {row['gmacs']:8.3f} GMACs {1e3 * row['t256']:9.1f} ms", flush=True)
    return rows


def ratio(rows: dict, a: str, b: str, key: str = "t256") -> str:
    return f"{rows[a][key] / rows[b][key]:.2f}x"


def render(rows: list[dict], args: argparse.Namespace) -> str:
    by = {r["label"]: r for r in rows}
    lines = [
        "## Networks: size and CPU latency",
        "",
        f"Measured by `python scripts/profile_networks.py{' --quick' if args.quick else ''}` on {cpu_description()};"
        f" torch {torch.__version__}, {args.threads} threads, batch 1, 3 input channels, 1 output channel, eval mode,"
        f" median of {args.repeats} passes after {args.warmup} warm-up passes. MACs counted with `FlopCounterMode`"
        " (conv and matmul only, MACs = FLOPs / 2) at 256 x 256.",
        "",
        "| network | parameters | GMACs @256 | latency @256 (ms) | latency @512 (ms) | paper's figures |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        t512 = f"{1e3 * r['t512']:.0f}" if "t512" in r else "-"
        t256 = f"{1e3 * r['t256']:.1f}"
        lines.append(f"| {r['label']} | {r['params']:,} | {r['gmacs']:.3f} | {t256} | {t512} | {r['paper']} |")
    plain = "ClassicUNet (plain, BN)"
    lines += [
        "",
        "Targets (latency at 256 x 256):",
        f"- `CBAMUNet` / its plain U-Net: {ratio(by, 'CBAMUNet', 'CBAMUNet off (= plain)')} (target <= 1.25x)",
        f"- `GSConvECAUNet` / plain U-Net of the same widths: {ratio(by, 'GSConvECAUNet', plain)} (target <= 0.75x)",
        f"- `SCUNeXt` / classic U-Net: {ratio(by, 'SCUNeXt', plain)} (target <= 0.02x)",
    ]
    if not args.quick:
        lines.append(
            f"- the same at 512 x 512: CBAM {ratio(by, 'CBAMUNet', 'CBAMUNet off (= plain)', 't512')}, "
            f"GSConv-ECA {ratio(by, 'GSConvECAUNet', plain, 't512')}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="256 x 256 only")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    table = render(measure(args), args)
    print(table)
    replace_section(args.output, "profile_networks", table)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
