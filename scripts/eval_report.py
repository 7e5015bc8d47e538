#!/usr/bin/env python3
"""scripts/eval_report.py: figures and tables from the JSON lines of `strata eval`.

    python3 scripts/eval_report.py RESULTS.jsonl --out DIR [--title TEXT] [--by-haystack]

Reads the records (task and fidelity; a resumed run appends, so the last
record of each key (kind, task, haystack, length, depth, sample, seed,
variant) wins) and writes into DIR:

  - score_vs_kv_<length>.png, one per context length: a panel per task, one
    for fidelity top-1 agreement and one for KL; x = mean KV MiB after the
    prompt (log), y = mean score; a line per policy through its budgets, the
    full cache as a star and a dashed horizontal reference.
  - niah_heatmap_<policy>.png, one per policy: a panel per budget (the full
    cache's panel first, for reference), depth (y) x length (x), the mean
    score of the needle tasks (niah_* and passkey), values in the cells.
  - multiturn.png: mean score per turn for each variant, a panel per
    (task, length), for every task whose records have more than one turn.
  - summary.md and summary.csv: per context length, a row per variant: each
    task's mean score and sample count, fidelity KL and top-1, mean KV MiB
    after the prompt and after decoding, mean prefill and decode seconds;
    summary.md also says where the full cache itself scores below 0.5.

--by-haystack splits each task by haystack ("niah_single/noise",
"niah_single/prose") in every figure and table. Exit status: 0 done, 1 a
missing package, 2 a usage error or an input without any record.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

MIB = float(1 << 20)
FAIL_THRESHOLD = 0.5
FAIL_PHRASE = "the model fails here even with the full cache"
KEY_FIELDS = ("kind", "task", "haystack", "length", "depth", "sample", "seed", "variant")


def note(message: str) -> None:
    print(f"eval_report: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------
# Reading


def _number(value):
    """A finite float, or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _int(value, default=0):
    number = _number(value)
    return int(number) if number is not None else default


def _variant_of(record: dict) -> str:
    policy = record.get("policy") or "?"
    if policy == "full":
        return "full"  # strata eval names it full@0: one reference whatever the budget column says
    variant = record.get("variant")
    if isinstance(variant, str) and variant:
        return variant
    return f"{policy}@{_int(record.get('budget'))}"


def load_records(path: Path) -> tuple[list[dict], int, int]:
    """The records of `path`, last one per key; also how many lines were read
    and how many were skipped."""
    latest: dict[tuple, dict] = {}
    lines = skipped = 0
    # A .gz file (how docs/results keeps its records) is read as the JSON lines it holds.
    opened = gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.suffix == ".gz" else \
        path.open(encoding="utf-8", errors="replace")
    with opened as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            lines += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                note(f"{path}:{number}: not JSON, skipped")
                skipped += 1
                continue
            if not isinstance(record, dict) or record.get("kind") not in ("task", "fidelity"):
                note(f"{path}:{number}: neither a task nor a fidelity record, skipped")
                skipped += 1
                continue
            record["variant"] = _variant_of(record)
            record["policy"] = str(record.get("policy") or record["variant"].split("@")[0])
            record["budget"] = _int(record.get("budget"))
            record["length"] = _int(record.get("length"))
            if record["kind"] == "task":
                record["task"] = str(record.get("task") or "?")
                scores = [s for s in (_number(v) for v in record.get("turn_scores") or []) if s is not None]
                record["turn_scores"] = scores
                score = _number(record.get("score"))
                if score is None and scores:
                    score = sum(scores) / len(scores)
                record["score"] = score
            key = tuple(json.dumps(record.get(field), sort_keys=True) for field in KEY_FIELDS)
            latest.pop(key, None)  # keep the position of the last one too
            latest[key] = record
    return list(latest.values()), lines, skipped


# ----------------------------------------------------------------------------
# Aggregation


def mean(values) -> float | None:
    numbers = [v for v in (_number(x) for x in values) if v is not None]
    return sum(numbers) / len(numbers) if numbers else None


def variant_sort_key(variant: str, policy: str, budget: int) -> tuple:
    # The full cache first, then the budget-free precisions (budget 0, e.g.
    # q8@0), then the budgeted policies by name and budget.
    return (0 if policy == "full" else 1 if budget == 0 else 2, policy, budget, variant)


class Results:
    def __init__(self, records: list[dict], by_haystack: bool):
        self.tasks = [r for r in records if r["kind"] == "task"]
        self.fidelity = [r for r in records if r["kind"] == "fidelity"]
        self.by_haystack = by_haystack
        info = {}
        for r in records:
            info.setdefault(r["variant"], (r["policy"], r["budget"]))
        self.variant_info = info
        self.variants = sorted(info, key=lambda v: variant_sort_key(v, *info[v]))
        self.policies = []
        for v in self.variants:
            if info[v][0] not in self.policies:
                self.policies.append(info[v][0])
        self.lengths = sorted({r["length"] for r in records})
        self.units = sorted({self.unit(r) for r in self.tasks})

    def unit(self, record: dict) -> str:
        """The task a record counts for: its task, or task/haystack."""
        if self.by_haystack and record.get("haystack"):
            return f"{record['task']}/{record['haystack']}"
        return record["task"]

    def task_records(self, length=None, unit=None, variant=None) -> list[dict]:
        return [r for r in self.tasks
                if (length is None or r["length"] == length)
                and (unit is None or self.unit(r) == unit)
                and (variant is None or r["variant"] == variant)]

    def fidelity_records(self, length=None, variant=None) -> list[dict]:
        return [r for r in self.fidelity
                if (length is None or r["length"] == length)
                and (variant is None or r["variant"] == variant)]

    def row(self, length: int, variant: str) -> dict:
        """The summary numbers of one variant at one length."""
        tasks = self.task_records(length=length, variant=variant)
        fidelity = self.fidelity_records(length=length, variant=variant)
        row = {"length": length, "variant": variant, "policy": self.variant_info[variant][0],
               "budget": self.variant_info[variant][1], "scores": {}}
        for unit in self.units:
            scores = [r["score"] for r in tasks if self.unit(r) == unit and r["score"] is not None]
            row["scores"][unit] = (mean(scores), len(scores))
        row["kl"] = mean(r.get("kl_mean") for r in fidelity)
        row["top1"] = mean(r.get("top1_agreement") for r in fidelity)
        row["fidelity_n"] = len(fidelity)
        # KV and timing over the task records; over the fidelity ones where
        # there is no task record (their decode lengths differ, so the two are
        # not mixed).
        source = tasks or fidelity
        row["kv_prefill_mib"] = _mib(mean(r.get("kv_bytes_prefill") for r in source))
        row["kv_decode_mib"] = _mib(mean(r.get("kv_bytes_decode") for r in source))
        row["prefill_s"] = mean(r.get("prefill_s") for r in source)
        row["decode_s"] = mean(r.get("decode_s") for r in source)
        row["timing_from"] = "task" if tasks else ("fidelity" if fidelity else "")
        return row

    def full_failures(self, length: int) -> list[tuple[str, float, int]]:
        failures = []
        for unit in self.units:
            scores = [r["score"] for r in self.task_records(length=length, unit=unit, variant="full")
                      if r["score"] is not None]
            if scores and mean(scores) < FAIL_THRESHOLD:
                failures.append((unit, mean(scores), len(scores)))
        return failures


def _mib(value):
    return None if value is None else value / MIB


# ----------------------------------------------------------------------------
# Tables


def fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_summary(results: Results, out: Path, title: str, source: Path) -> list[Path]:
    md = [f"# {title}", "",
          f"From `{source.name}`: {len(results.tasks)} task and {len(results.fidelity)} fidelity records "
          "(the last record of each key). Scores are means over samples (and depths and haystacks), "
          "with the number of records (samples x depths x haystacks) in parentheses; KL and top-1 "
          "compare each variant's next-token distribution with the full cache's; KV MiB and seconds are means over the task records "
          "(over the fidelity records for a variant without task records).", ""]
    csv_rows = []
    unit_columns = [f"{u} (n)" for u in results.units]
    header = ["variant", *unit_columns, "KL", "top-1 (n)", "KV MiB prefill", "KV MiB decode",
              "prefill s", "decode s"]
    for length in results.lengths:
        md += [f"## Context length {length}", ""]
        md.append("| " + " | ".join(header) + " |")
        md.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for variant in results.variants:
            row = results.row(length, variant)
            if not any(n for _, n in row["scores"].values()) and not row["fidelity_n"]:
                continue
            cells = [f"`{variant}`"]
            for unit in results.units:
                value, n = row["scores"][unit]
                cells.append(f"{fmt(value)} ({n})" if n else "–")
            cells.append(fmt(row["kl"], 4))
            cells.append(f"{fmt(row['top1'])} ({row['fidelity_n']})" if row["fidelity_n"] else "–")
            cells += [fmt(row["kv_prefill_mib"], 2), fmt(row["kv_decode_mib"], 2),
                      fmt(row["prefill_s"], 2), fmt(row["decode_s"], 2)]
            md.append("| " + " | ".join(cells) + " |")
            csv_rows.append(row)
        md.append("")
        if not results.task_records(length=length, variant="full"):
            md.append("No full-cache task records at this length: where the model itself fails is not known.")
        else:
            failures = results.full_failures(length)
            if failures:
                for unit, value, n in failures:
                    md.append(f"- `{unit}` at {length}: the full cache scores {value:.3f} (n={n}) "
                              f"below {FAIL_THRESHOLD}: {FAIL_PHRASE}.")
            else:
                md.append(f"The full cache scores at least {FAIL_THRESHOLD} on every task at this length.")
        md.append("")
    summary_md = out / "summary.md"
    summary_md.write_text("\n".join(md), encoding="utf-8")

    summary_csv = out / "summary.csv"
    with summary_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        columns = ["length", "variant", "policy", "budget"]
        for unit in results.units:
            columns += [f"{unit}_score", f"{unit}_n"]
        columns += ["fidelity_kl", "fidelity_top1", "fidelity_n", "kv_mib_prefill", "kv_mib_decode",
                    "prefill_s", "decode_s", "kv_and_time_from", "full_fails"]
        writer.writerow(columns)
        for row in csv_rows:
            failures = {u for u, _, _ in results.full_failures(row["length"])}
            line = [row["length"], row["variant"], row["policy"], row["budget"]]
            for unit in results.units:
                value, n = row["scores"][unit]
                line += [_csv(value), n]
            line += [_csv(row["kl"]), _csv(row["top1"]), row["fidelity_n"], _csv(row["kv_prefill_mib"]),
                      _csv(row["kv_decode_mib"]), _csv(row["prefill_s"]), _csv(row["decode_s"]),
                      row["timing_from"], ";".join(sorted(failures))]
            writer.writerow(line)
    return [summary_md, summary_csv]


def _csv(value) -> str:
    return "" if value is None else f"{value:.6g}"


# ----------------------------------------------------------------------------
# Figures

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*"]
FULL_COLOR = "black"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


class Style:
    """A color and marker per policy, the same in every figure."""

    def __init__(self, policies: list[str], plt):
        others = [p for p in policies if p != "full"]
        cmap = plt.get_cmap("tab10" if len(others) <= 10 else "tab20")
        count = cmap.N
        self.color = {"full": FULL_COLOR}
        self.marker = {"full": "*"}
        for i, policy in enumerate(others):
            self.color[policy] = cmap(i % count)
            self.marker[policy] = MARKERS[i % len(MARKERS)]


def log_ticks(low: float, high: float) -> list[float]:
    """Round values between low and high for a log axis: 1-2-5 per decade,
    denser where the range is narrow, 3 at least where there is room."""
    for steps in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = []
        for exponent in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
            ticks += [float(f"{step * 10.0 ** exponent:.6g}") for step in steps]
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) >= 4:
            return ticks
    return ticks


def _mib_axis(ax, ticker, low: float, high: float):
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.xaxis.set_major_locator(ticker.FixedLocator(log_ticks(low, high)))
    ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(1, 10))))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _grid(count: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, count)
    return math.ceil(count / cols), cols


def plot_score_vs_kv(results: Results, out: Path, title: str, plt, ticker, style: Style) -> list[Path]:
    written = []
    for length in results.lengths:
        panels = []  # (name, records, value getter, y label, is score)
        for unit in results.units:
            records = [r for r in results.task_records(length=length, unit=unit) if r["score"] is not None]
            if records:
                panels.append((unit, records, lambda r: r["score"], "mean score", "score"))
        fidelity = results.fidelity_records(length=length)
        if any(_number(r.get("top1_agreement")) is not None for r in fidelity):
            panels.append(("fidelity: top-1 agreement", fidelity, lambda r: r.get("top1_agreement"),
                           "top-1 agreement with full", "score"))
        if any(_number(r.get("kl_mean")) is not None for r in fidelity):
            panels.append(("fidelity: KL from full (lower is better)", fidelity, lambda r: r.get("kl_mean"),
                           "mean KL (nats)", "kl"))
        if not panels:
            print(f"eval_report: no task or fidelity scores at length {length}: score_vs_kv_{length}.png skipped")
            continue
        sizes = [_mib(_number(r.get("kv_bytes_prefill"))) for _, records, _, _, _ in panels for r in records]
        sizes = [x for x in sizes if x is not None and x > 0]
        if not sizes:
            print(f"eval_report: no KV sizes (kv_bytes_prefill) at length {length}: score_vs_kv_{length}.png skipped")
            continue
        # One x range for every panel of the figure, a little wider than the data.
        low, high = min(sizes) / 1.15, max(sizes) * 1.15
        rows, cols = _grid(len(panels))
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.7 * rows), squeeze=False)
        legend = {}
        for ax, (name, records, value_of, ylabel, kind) in zip(axes.flat, panels):
            plotted = False
            full_value = None
            for policy in results.policies:
                points = []
                for variant in results.variants:
                    if results.variant_info[variant][0] != policy:
                        continue
                    chosen = [r for r in records if r["variant"] == variant]
                    x = _mib(mean(r.get("kv_bytes_prefill") for r in chosen))
                    y = mean(value_of(r) for r in chosen)
                    if x is None or y is None or x <= 0:
                        continue
                    points.append((x, y, results.variant_info[variant][1]))
                if not points:
                    continue
                points.sort()
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                if policy == "full":
                    full_value = ys[0]
                    ax.axhline(ys[0], color=FULL_COLOR, linestyle="--", linewidth=1.0, alpha=0.6, zorder=1)
                    handle = ax.plot(xs, ys, linestyle="none", marker="*", markersize=14, color=FULL_COLOR,
                                     zorder=5)[0]
                    label = "full cache (dashed: its level)"
                else:
                    budgets = [p[2] for p in points]
                    budget_free = all(b == 0 for b in budgets)
                    handle = ax.plot(xs, ys, marker=style.marker[policy], color=style.color[policy],
                                     linestyle="none" if budget_free else "-", linewidth=1.6,
                                     markersize=8 if budget_free else 6, alpha=0.85, zorder=3)[0]
                    label = f"{policy} (no budget)" if budget_free else \
                        f"{policy} @ " + ", ".join(str(b) for b in sorted(set(budgets)))
                legend.setdefault(policy, (handle, label))
                plotted = True
            if not plotted:
                ax.text(0.5, 0.5, "no KV sizes recorded", ha="center", va="center", transform=ax.transAxes)
            _mib_axis(ax, ticker, low, high)
            if kind == "score":
                ax.set_ylim(-0.04, 1.04)
            else:
                top = ax.get_ylim()[1]
                ax.set_ylim(-0.03 * top, top)  # the full cache's KL of 0 shows whole
            full_note = ""
            if kind == "score" and name in results.units and full_value is not None and full_value < FAIL_THRESHOLD:
                full_note = "\n(full cache < 0.5: the model fails here)"
            n = len({(r.get("task"), r.get("haystack"), r.get("depth"), r.get("sample"), r.get("seed"))
                     for r in records})
            ax.set_title(f"{name}  (n={n}){full_note}", fontsize=10,
                         color="firebrick" if full_note else "black")
            ax.set_xlabel("KV cache after the prompt (MiB, log)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major", alpha=0.3)
            ax.grid(True, which="minor", alpha=0.1)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        handles = [legend[p] for p in results.policies if p in legend]
        fig.suptitle(f"{title}: score vs KV memory, context {length} tokens", fontsize=12)
        if handles:
            fig.legend([h for h, _ in handles], [label for _, label in handles], loc="outside lower center",
                       ncol=min(len(handles), 4), fontsize=9, frameon=False)
        path = out / f"score_vs_kv_{length}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def is_needle(task: str) -> bool:
    return task.startswith("niah") or task == "passkey"


def plot_heatmaps(results: Results, out: Path, title: str, plt) -> list[Path]:
    needles = [r for r in results.tasks if is_needle(r["task"]) and r["score"] is not None
               and _number(r.get("depth")) is not None]
    if not needles:
        print("eval_report: no needle records (niah_*, passkey) with a depth: niah heatmaps skipped")
        return []
    depths = sorted({round(float(r["depth"]), 4) for r in needles})
    lengths = sorted({r["length"] for r in needles})
    cells = defaultdict(list)
    for r in needles:
        cells[(r["variant"], round(float(r["depth"]), 4), r["length"])].append(r["score"])
    tasks = sorted({r["task"] for r in needles})

    def matrix(variant):
        grid = np.full((len(depths), len(lengths)), np.nan)
        for i, d in enumerate(depths):
            for j, length in enumerate(lengths):
                values = cells.get((variant, d, length))
                if values:
                    grid[i, j] = sum(values) / len(values)
        return grid

    cmap = plt.get_cmap("RdYlGn").copy()
    cmap.set_bad("#dddddd")
    has_full = any(r["variant"] == "full" for r in needles)
    written = []
    for policy in results.policies:
        variants = [v for v in results.variants if results.variant_info[v][0] == policy
                    and any(key[0] == v for key in cells)]
        if not variants:
            continue
        panels = ([] if policy == "full" or not has_full else ["full"]) + variants
        rows, cols = _grid(len(panels), 4)
        panel_w = max(3.0, 0.95 * len(lengths) + 1.5)
        panel_h = max(2.4, 0.36 * len(depths) + 1.3)
        fig, axes = plt.subplots(rows, cols, figsize=(max(6.5, cols * panel_w + 1.0), rows * panel_h + 0.5),
                                 squeeze=False)
        image = None
        for ax, variant in zip(axes.flat, panels):
            grid = matrix(variant)
            image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                              interpolation="nearest")
            for i in range(len(depths)):
                for j in range(len(lengths)):
                    value = grid[i, j]
                    text = "–" if np.isnan(value) else f"{value:.2f}"
                    color = "white" if not np.isnan(value) and (value < 0.2 or value > 0.85) else "black"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
            ax.set_xticks(range(len(lengths)), [str(length) for length in lengths], fontsize=8)
            ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=8)
            ax.set_xlabel("context length (tokens)", fontsize=9)
            ax.set_ylabel("needle depth (0 = start)", fontsize=9)
            reference = " (reference)" if variant == "full" and policy != "full" else ""
            ax.set_title(f"{variant}{reference}", fontsize=10)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.suptitle(f"{title}: needle score of {policy}\nmean over {', '.join(tasks)}", fontsize=11)
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, label="mean score", pad=0.02)
        path = out / f"niah_heatmap_{safe_name(policy)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _shade(color, rank: int, count: int):
    """The policy's color, lighter for smaller budgets."""
    r, g, b = color[:3]
    mix = 0.0 if count <= 1 else 0.55 * (1 - rank / (count - 1))
    return (r + (1 - r) * mix, g + (1 - g) * mix, b + (1 - b) * mix)


def _key(results, multi, policy, style, budgets, linestyles):
    """Legend handles of one column of multiturn.png."""
    from matplotlib.lines import Line2D
    handles, labels = [], []
    if any(r["variant"] == "full" for r in multi):
        handles.append(Line2D([], [], color=FULL_COLOR, marker="*", markersize=10, linewidth=2.0, alpha=0.75))
        labels.append("full")
    if policy != "full":
        for rank, budget in enumerate(budgets):
            variant = next(v for v in results.variants if results.variant_info[v] == (policy, budget))
            handles.append(Line2D([], [], color=_shade(style.color[policy], rank, len(budgets)),
                                  marker=style.marker[policy], markersize=5, linewidth=1.8,
                                  linestyle=linestyles[rank % len(linestyles)]))
            labels.append(variant)
    return handles, labels


def plot_multiturn(results: Results, out: Path, title: str, plt, style: Style) -> list[Path]:
    multi = [r for r in results.tasks if (len(r["turn_scores"]) > 1 or r["task"] == "multiturn")
             and r["turn_scores"]]
    if not multi:
        print("eval_report: no multi-turn records: multiturn.png skipped")
        return []
    # Small multiples: a row per (task, length), a column per policy, each
    # panel that policy's budgets (darker: larger) beside the full cache.
    rows = sorted({(results.unit(r), r["length"]) for r in multi})
    policies = [p for p in results.policies if p != "full" and any(r["policy"] == p for r in multi)] or ["full"]
    fig, axes = plt.subplots(len(rows), len(policies), figsize=(3.3 * len(policies) + 0.4, 2.7 * len(rows) + 0.6),
                             squeeze=False, sharey=True)
    linestyles = ["-", "--", "-.", ":"]
    budgets_of = {p: sorted({r["budget"] for r in multi if r["policy"] == p}) for p in policies}
    for i, (unit, length) in enumerate(rows):
        records = [r for r in multi if results.unit(r) == unit and r["length"] == length]
        turns = max(len(r["turn_scores"]) for r in records)
        n = len({(r.get("haystack"), r.get("depth"), r.get("sample"), r.get("seed")) for r in records})
        for j, policy in enumerate(policies):
            ax = axes[i, j]
            variants = [v for v in results.variants if results.variant_info[v][0] in (policy, "full")
                        and any(r["variant"] == v for r in records)]
            budgets = budgets_of[policy]
            for variant in variants:
                chosen = [r for r in records if r["variant"] == variant]
                xs, ys = [], []
                for t in range(turns):
                    values = [r["turn_scores"][t] for r in chosen if len(r["turn_scores"]) > t]
                    if values:
                        xs.append(t + 1)
                        ys.append(sum(values) / len(values))
                if variant == "full":
                    kwargs = dict(color=FULL_COLOR, marker="*", markersize=10, linewidth=2.0, alpha=0.75,
                                  zorder=2, label="full")
                else:
                    rank = budgets.index(results.variant_info[variant][1])
                    kwargs = dict(color=_shade(style.color[policy], rank, len(budgets)), marker=style.marker[policy],
                                  markersize=5, linewidth=1.8, linestyle=linestyles[rank % len(linestyles)],
                                  zorder=3, label=variant)
                ax.plot(xs, ys, **kwargs)
            if not variants:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_xticks(range(1, turns + 1))
            ax.set_xlim(0.7, turns + 0.3)
            ax.set_ylim(-0.04, 1.04)
            ax.grid(True, alpha=0.3)
            if i == len(rows) - 1:
                ax.set_xlabel("turn")
            if j == 0:
                ax.set_ylabel(f"{unit}, {length}\n(n={n})\nmean score", fontsize=9)
            if i == 0:
                # The column's key above it, where it hides no line: the
                # budgets' styles are the same in every row.
                ax.legend(*_key(results, multi, policy, style, budgets_of[policy], linestyles), title=policy,
                          title_fontproperties={"size": 10, "weight": "bold"}, fontsize=7, ncol=2,
                          loc="lower center", bbox_to_anchor=(0.5, 1.02), frameon=False)
    fig.suptitle(f"{title}: mean score per turn", fontsize=12)
    path = out / "multiturn.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


# ----------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the JSON lines file of strata eval")
    parser.add_argument("--out", type=Path, required=True, help="directory for the figures and tables")
    parser.add_argument("--title", default="strata eval", help="title of the figures and of summary.md")
    parser.add_argument("--by-haystack", action="store_true", help="split each task by haystack")
    args = parser.parse_args(argv)

    if not args.results.is_file():
        note(f"{args.results}: no such file")
        return 2
    records, lines, skipped = load_records(args.results)
    if not records:
        note(f"{args.results}: no task or fidelity record in it ({lines} lines, {skipped} skipped): nothing to report")
        return 2
    results = Results(records, args.by_haystack)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        note("matplotlib is missing: run scripts/setup.sh (or python3 -m pip install matplotlib)")
        return 1
    plt.rcParams.update({"figure.constrained_layout.use": True, "savefig.facecolor": "white",
                         "svg.hashsalt": "strata", "path.simplify": False})

    args.out.mkdir(parents=True, exist_ok=True)
    style = Style(results.policies, plt)
    written = write_summary(results, args.out, args.title, args.results)  # the tables first
    written += plot_score_vs_kv(results, args.out, args.title, plt, ticker, style)
    written += plot_heatmaps(results, args.out, args.title, plt)
    written += plot_multiturn(results, args.out, args.title, plt, style)
    print(f"eval_report: {len(results.tasks)} task and {len(results.fidelity)} fidelity records "
          f"({lines - skipped - len(records)} superseded, {skipped} skipped), "
          f"{len(results.variants)} variants, lengths {', '.join(map(str, results.lengths))}")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
