"""tests/python/test_eval_report.py: scripts/eval_report.py on a small
synthetic results file of `strata eval` (no model, no strata binary).

The report writes every figure (valid PNGs) and both tables; the last record
of a key wins over the ones a resumed run wrote before it; the table's means
are the ones computed here by hand; a length where the full cache scores
below 0.5 is called out; the tables do not depend on the order of the
records; an input without any record exits 2 with a message, and one
without task records still reports its fidelity.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "eval_report.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIB = 1 << 20

VARIANTS = {"full": ("full", 0), "q8@0": ("q8", 0), "snapkv@256": ("snapkv", 256),
            "snapkv@1024": ("snapkv", 1024)}
KV_MIB = {"full": 8, "q8@0": 4, "snapkv@256": 2, "snapkv@1024": 3}  # after the prompt, at 4096
DEPTHS = (0.0, 0.5, 1.0)


def niah_score(length: int, variant: str, depth: float, sample: int) -> float:
    if variant in ("full", "q8@0"):
        # The model itself fails at 8192: one hit in six.
        return 1.0 if length == 4096 or (depth == 1.0 and sample == 0) else 0.0
    if variant == "snapkv@256":
        return 1.0 if depth == 1.0 else 0.0  # 2 of 6
    return 0.0 if (depth == 0.0 and sample == 0) else 1.0  # snapkv@1024: 5 of 6


def multiturn_turns(variant: str, sample: int) -> list[float]:
    if variant == "snapkv@256":
        return [1.0, 0.0, 0.0] if sample == 0 else [1.0, 1.0, 0.0]  # score 1/3 and 2/3
    return [1.0, 1.0, 1.0]


def task_record(task, length, variant, depth, sample, turns):
    policy, budget = VARIANTS[variant]
    scale = length // 4096
    return {"kind": "task", "task": task, "haystack": "noise", "length": length, "context_tokens": length + 5,
            "depth": depth, "sample": sample, "seed": 100 + sample, "policy": policy, "budget": budget,
            "variant": variant, "turn_scores": turns, "score": sum(turns) / len(turns),
            "outputs": ["1"] * len(turns), "answers": [["1"]] * len(turns),
            "kv_bytes_prefill": KV_MIB[variant] * scale * MIB, "kv_bytes_decode": (KV_MIB[variant] * scale + 1) * MIB,
            "prefill_s": 2.0 * scale, "decode_s": 0.5, "decode_tokens": 8}


def fidelity_record(length, variant, sample, kl, top1):
    policy, budget = VARIANTS[variant]
    return {"kind": "fidelity", "length": length, "sample": sample, "seed": sample, "policy": policy,
            "budget": budget, "variant": variant, "kl_mean": kl, "top1_agreement": top1, "positions": 64,
            "kv_bytes_prefill": KV_MIB[variant] * MIB, "kv_bytes_decode": KV_MIB[variant] * MIB,
            "prefill_s": 1.0, "decode_s": 0.25}


def synthetic_records() -> list[dict]:
    records = []
    # A first, interrupted run: wrong scores that the resumed run's records replace.
    for depth in DEPTHS:
        for sample in (0, 1):
            records.append(task_record("niah_single", 4096, "snapkv@256", depth, sample, [1.0]))
    records.append(task_record("multiturn", 4096, "snapkv@256", None, 0, [1.0, 1.0, 1.0]))
    records.append(fidelity_record(4096, "snapkv@256", 0, 9.0, 0.0))
    # The full run.
    for length in (4096, 8192):
        for variant in VARIANTS:
            for depth in DEPTHS:
                for sample in (0, 1):
                    records.append(task_record("niah_single", length, variant, depth, sample,
                                               [niah_score(length, variant, depth, sample)]))
            for sample in (0, 1):
                records.append(task_record("multiturn", length, variant, None, sample,
                                           multiturn_turns(variant, sample)))
    for sample, (kl, top1) in enumerate([(0.3, 0.8), (0.5, 0.9)]):
        records.append(fidelity_record(4096, "snapkv@256", sample, kl, top1))
        records.append(fidelity_record(4096, "full", sample, 0.0, 1.0))
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def report(results: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(results), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300)


def table_rows(summary: str, length: int) -> dict[str, list[str]]:
    """The cells of each variant's row in the table of one length."""
    section = summary.split(f"## Context length {length}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval_report")
    results = write_jsonl(tmp / "results.jsonl", synthetic_records())
    out = tmp / "report"
    result = report(results, out, "--title", "synthetic check")
    assert result.returncode == 0, result.stderr
    return out, result


def test_every_output_is_written_and_every_figure_is_a_png(reported):
    out, result = reported
    figures = ["score_vs_kv_4096.png", "score_vs_kv_8192.png", "niah_heatmap_full.png", "niah_heatmap_q8.png",
               "niah_heatmap_snapkv.png", "multiturn.png"]
    for name in figures:
        path = out / name
        assert path.is_file(), f"{name} missing; stdout: {result.stdout}"
        assert path.read_bytes()[:8] == PNG_MAGIC, f"{name} is not a PNG"
        assert path.stat().st_size > 10_000, f"{name} looks empty"
    assert (out / "summary.md").is_file() and (out / "summary.csv").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(figures + ["summary.md", "summary.csv"])


def test_summary_has_every_variant_and_the_means_computed_by_hand(reported):
    out, _ = reported
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# synthetic check")
    header = next(line for line in summary.splitlines() if line.startswith("| variant"))
    columns = [cell.strip() for cell in header.strip("|").split("|")][1:]
    rows = table_rows(summary, 4096)
    assert list(rows) == ["full", "q8@0", "snapkv@256", "snapkv@1024"]  # full, budget-free, then by budget
    snap = dict(zip(columns, rows["snapkv@256"]))
    # The resumed run's records win: 2 of 6 needles (not 8 of 12), turns 1/3 and 2/3.
    assert snap["niah_single (n)"] == "0.333 (6)"
    assert snap["multiturn (n)"] == "0.500 (2)"
    assert snap["KL"] == "0.4000"  # (0.3 + 0.5) / 2, not the first run's 9.0
    assert snap["top-1 (n)"] == "0.850 (2)"
    assert snap["KV MiB prefill"] == "2.00" and snap["KV MiB decode"] == "3.00"
    assert dict(zip(columns, rows["snapkv@1024"]))["niah_single (n)"] == "0.833 (6)"
    full = dict(zip(columns, rows["full"]))
    assert full["niah_single (n)"] == "1.000 (6)" and full["KV MiB prefill"] == "8.00"
    assert dict(zip(columns, rows["q8@0"]))["top-1 (n)"] == "–"  # no fidelity record
    rows_8192 = table_rows(summary, 8192)
    assert dict(zip(columns, rows_8192["full"]))["niah_single (n)"] == "0.167 (6)"
    assert dict(zip(columns, rows_8192["snapkv@256"]))["prefill s"] == "4.00"


def test_the_full_cache_failing_is_called_out_where_it_fails(reported):
    out, _ = reported
    summary = (out / "summary.md").read_text(encoding="utf-8")
    section_4096 = summary.split("## Context length 4096", 1)[1].split("## Context length 8192", 1)[0]
    section_8192 = summary.split("## Context length 8192", 1)[1]
    assert "the model fails here even with the full cache" not in section_4096
    fails = [line for line in section_8192.splitlines() if "the model fails here even with the full cache" in line]
    assert len(fails) == 1 and "niah_single" in fails[0] and "0.167" in fails[0]


def test_csv_has_the_same_numbers(reported):
    out, _ = reported
    with (out / "summary.csv").open(encoding="utf-8") as handle:
        rows = {(row["length"], row["variant"]): row for row in csv.DictReader(handle)}
    assert len(rows) == 8
    snap = rows[("4096", "snapkv@256")]
    assert float(snap["niah_single_score"]) == pytest.approx(1 / 3, abs=1e-5) and snap["niah_single_n"] == "6"
    assert float(snap["fidelity_kl"]) == pytest.approx(0.4)
    assert float(snap["kv_mib_prefill"]) == pytest.approx(2.0)
    assert rows[("8192", "full")]["full_fails"] == "niah_single"


def test_tables_do_not_depend_on_record_order(reported, tmp_path):
    out, _ = reported
    # Without the first run's duplicates, reversing the lines changes nothing.
    records = synthetic_records()[8:]
    reversed_out = tmp_path / "reversed"
    results = write_jsonl(tmp_path / "reversed.jsonl", records[::-1])
    result = report(results, reversed_out, "--title", "synthetic check")
    assert result.returncode == 0, result.stderr
    for name in ("summary.md", "summary.csv"):
        expected = (out / name).read_text(encoding="utf-8").replace("results.jsonl", "reversed.jsonl")
        assert (reversed_out / name).read_text(encoding="utf-8") == expected


def test_gzipped_records_give_the_same_tables(reported, tmp_path):
    import gzip
    out, _ = reported
    results = out.parent / "results.jsonl"
    packed = tmp_path / "results.jsonl.gz"
    packed.write_bytes(gzip.compress(results.read_bytes()))
    packed_out = tmp_path / "packed"
    result = report(packed, packed_out, "--title", "synthetic check")
    assert result.returncode == 0, result.stderr
    for name in ("summary.md", "summary.csv"):
        expected = (out / name).read_text(encoding="utf-8").replace("results.jsonl", "results.jsonl.gz")
        assert (packed_out / name).read_text(encoding="utf-8") == expected


@pytest.mark.parametrize("content", ["", "\n\n", "not json\n{\"kind\": \"other\"}\n"])
def test_an_input_without_records_exits_2_with_a_message(tmp_path, content):
    results = tmp_path / "empty.jsonl"
    results.write_text(content, encoding="utf-8")
    result = report(results, tmp_path / "out")
    assert result.returncode == 2
    assert "no task or fidelity record" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_input_exits_2(tmp_path):
    result = report(tmp_path / "absent.jsonl", tmp_path / "out")
    assert result.returncode == 2 and "no such file" in result.stderr


def test_fidelity_alone_skips_the_task_figures_with_a_note(tmp_path):
    records = [r for r in synthetic_records() if r["kind"] == "fidelity"]
    out = tmp_path / "out"
    result = report(write_jsonl(tmp_path / "fidelity.jsonl", records), out)
    assert result.returncode == 0, result.stderr
    assert "heatmaps skipped" in result.stdout and "multiturn.png skipped" in result.stdout
    assert (out / "score_vs_kv_4096.png").read_bytes()[:8] == PNG_MAGIC
    assert not list(out.glob("niah_heatmap_*.png")) and not (out / "multiturn.png").exists()
    assert "0.4000" in (out / "summary.md").read_text(encoding="utf-8")


def test_sparse_records_give_the_tables_and_skip_what_cannot_be_drawn(tmp_path):
    # One task record, no depth, no KV sizes, no timing: nothing to draw, but a table.
    record = {"kind": "task", "task": "qa", "length": 4096, "sample": 0, "seed": 1, "policy": "full", "budget": 0,
              "variant": "full", "turn_scores": [0.0], "score": 0.0}
    out = tmp_path / "out"
    result = report(write_jsonl(tmp_path / "one.jsonl", [record]), out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv", "summary.md"]
    assert "score_vs_kv_4096.png skipped" in result.stdout
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| `full` | 0.000 (1) |" in summary and "the model fails here even with the full cache" in summary
