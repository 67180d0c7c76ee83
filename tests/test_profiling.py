from __future__ import annotations

import torch

from custom_networks.profiling import count_macs, count_parameters, cpu_description, median_latency


def test_macs_of_a_single_conv_are_known():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    assert count_macs(conv, (1, 3, 16, 16)) == 16 * 16 * 3 * 8 * 9


def test_parameters_count_only_trainable():
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 1))
    net[1].weight.requires_grad_(False)
    assert count_parameters(net) == 4 * 5 + 5 + 1


def test_latency_is_positive_and_threads_restored():
    before = torch.get_num_threads()
    assert median_latency(torch.nn.Conv2d(1, 1, 3), (1, 1, 8, 8), threads=1, warmup=1, repeats=3) > 0
    assert torch.get_num_threads() == before


def test_cpu_description_names_threads():
    assert "threads" in cpu_description()


def test_replace_section_keeps_the_rest_of_the_document(tmp_path):
    from custom_networks.profiling import replace_section

    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    replace_section(doc, "nets", "table 1")
    replace_section(doc, "io", "table 2")
    replace_section(doc, "nets", "table 1b")
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert "table 1b" in text and "table 1\n" not in text and "table 2" in text
    assert text.index("table 1b") < text.index("table 2")
    assert not (tmp_path / "bench.md.tmp").exists()
