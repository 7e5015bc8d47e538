#!/usr/bin/env python3
"""scripts/correctness_report.py: how close strata and llama.cpp come to the
float reference on the real gemma-3-270m Q4_K_M.

    python3 scripts/correctness_report.py [--reuse-llamacpp] [--no-strata]

For each prompt below it teacher-forces the token ids through
  - the float64 numpy reference (tests/python/reference.py) over the file's
    exactly dequantized weights,
  - llama.cpp (the peer build of scripts/peer-build.sh, through the
    llama-cpp-python bindings of the same source package), and
  - strata (`strata logits`, $STRATA_BIN or build/strata), when built,
and writes
  - tests/fixtures/gemma_prompts.json: the prompts and their token ids from
    llama.cpp's tokenizer (the test must not depend on strata's tokenizer),
  - tests/fixtures/gemma_llamacpp_figures.json: llama.cpp's figures, which
    tests/python/test_gemma_reference.py holds strata to,
  - docs/correctness.md: the table for both engines.

--reuse-llamacpp keeps both fixtures as committed and takes llama.cpp's
columns from them (no llama.cpp needed); --no-strata leaves strata's columns
out. Needs the model (scripts/fetch-model.sh) and, without --reuse-llamacpp,
the peer build (scripts/peer-build.sh). Memory: ~8 GB; time: ~4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))

import gemma_reference as gr  # noqa: E402
import strata_cli  # noqa: E402

LLAMA_CPP_PYTHON_VERSION = os.environ.get("LLAMA_CPP_PYTHON_VERSION", "0.3.36")
PEER_ROOT = gr.CACHE / "peer" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
DOC = REPO / "docs" / "correctness.md"

# Each text is cut to `positions` tokens (BOS included). The prose crosses
# gemma's 512-token sliding window; the dialogue uses the chat template's
# control tokens.
PROMPTS = [
    {"name": "prose", "kind": "English prose", "positions": 640, "text": """\
The harbour town of Pellmoor kept its clocks by the lighthouse. Every evening at dusk the keeper, \
a patient woman named Idris Vale, climbed the hundred and twelve steps of the tower, trimmed the \
wick, polished the great lens with a chamois cloth, and wound the clockwork that turned the light. \
The beam swept the bay once every twelve seconds, and the fishermen, who had never owned watches, \
counted the flashes to time their nets. When the beam was steady, the town was steady.

Nobody remembered who had first decided that the lighthouse should also keep the town's time. The \
parish records said only that in the winter of the great storm, when the church bell cracked and \
the baker's oven flooded, the keeper of that year had rung a hand bell at noon from the gallery of \
the tower, and that the habit had simply continued. By Idris's day the hand bell had become a brass \
gong, the gong had acquired a rope, and the rope ran down through a hole in the floor to a hook \
beside the keeper's kettle, so that she could strike noon without leaving her tea.

Visitors found this charming, and then, after a few days, maddening. The lighthouse clock ran slow \
in cold weather and fast in warm, because the brass pendulum grew and shrank with the seasons. In \
January the town ate lunch nearly four minutes late; in August it ate early. The schoolteacher, who \
had studied in the city and owned a chronometer, once wrote a long letter to the harbour council \
explaining thermal expansion with diagrams. The council thanked him warmly and changed nothing.

What changed things was the railway. When the line from the capital reached Pellmoor, the trains \
arrived according to the capital's time, and the capital did not care about the lighthouse. For a \
summer the town lived with two noons. Shops opened by the gong and closed by the station clock; \
weddings were scheduled in one time and attended in the other; a cattle auction collapsed into an \
argument about whether the bidding had closed. Idris listened to all of it from her gallery and \
said nothing, which the town took for stubbornness.

In fact she was measuring. Each night, with the schoolteacher's borrowed chronometer on the sill, \
she noted how far the lighthouse clock had drifted, and against it the temperature of the lamp \
room. By autumn she had a column of numbers as long as her arm, and by winter she had found the \
pattern the teacher had described: a little less than a second a day for every degree of warmth. \
She did not write letters. She cut a strip of steel from an old barrel hoop, riveted it to the \
brass of the pendulum so that the two metals pulled against each other, and filed the steel until \
the drift nearly vanished.

The following spring the lighthouse and the station agreed to within a breath, and the town, \
which had been preparing to choose sides, discovered that it no longer needed to. The schoolteacher \
wrote another letter, this one to a scientific journal, describing the compensated pendulum of \
Pellmoor light. The journal printed it with his name at the top. Idris read it by the lamp, \
folded it into the log book between the pages for March, and went up to wind the clock."""},
    {"name": "code", "kind": "source code", "positions": 320, "text": """\
/* ring.c: a fixed-capacity ring buffer of bytes. */
#include <stddef.h>
#include <string.h>

struct ring {
    unsigned char *data;
    size_t capacity;   /* a power of two */
    size_t head;       /* next byte to read */
    size_t tail;       /* next byte to write */
};

static size_t ring_used(const struct ring *r) { return r->tail - r->head; }

size_t ring_write(struct ring *r, const void *src, size_t n)
{
    size_t room = r->capacity - ring_used(r);
    if (n > room)
        n = room;
    for (size_t i = 0; i < n; i++)
        r->data[(r->tail + i) & (r->capacity - 1)] = ((const unsigned char *)src)[i];
    r->tail += n;
    return n;
}

def moving_average(values, window):
    \"\"\"Yield the mean of each run of `window` consecutive values.\"\"\"
    if window <= 0:
        raise ValueError("window must be positive")
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        if i >= window - 1:
            yield total / window

if __name__ == "__main__":
    print(list(moving_average([3, 1, 4, 1, 5, 9, 2, 6], 3)))
"""},
    {"name": "list", "kind": "a list", "positions": 320, "text": """\
Checklist for closing the mountain hut at the end of the season:

1. Drain the water tank completely and leave the outlet valve open.
2. Disconnect the gas bottles, cap them, and store them in the locked shed.
3. Sweep the chimney and close the damper so that birds cannot nest inside.
4. Empty the food store; anything left will attract mice. Tins may stay.
5. Wash, dry and fold the blankets, then seal them in the plastic chests.
6. Count the mattresses (there should be fourteen) and stack them on the upper bunks.
7. Check the first-aid kit and note what needs replacing next spring:
   - bandages and sterile dressings
   - the splint, if it was used
   - painkillers past their date
8. Read the electricity meter and write the figure in the logbook.
9. Switch off the main breaker, except for the frost heater in the pump room.
10. Close and bolt the shutters, starting with the north side.
11. Photograph the roof from the path so damage can be compared in April.
12. Lock the door, hang the key in the box at the valley station, and sign the register.

Things people usually forget: the window in the drying room, the axe by the woodpile, \
the second padlock on the shed, and telling the rescue service that the hut is closed.

Before leaving the valley, also:
a) return the spare radio to the club office and charge its battery first;
b) post the season's figures (overnight guests, meals served, litres of fuel used) to the treasurer;
c) leave a note for next year's wardens listing every repair that could not wait, with photographs.
"""},
    {"name": "dialogue", "kind": "a chat dialogue", "positions": 320, "text": """\
<start_of_turn>user
My tomato seedlings are tall and floppy and keep falling over. What am I doing wrong?<end_of_turn>
<start_of_turn>model
Tall, weak seedlings are usually stretching toward light. This is called legginess. The most \
common causes are:

- Not enough light: a windowsill is often too dim, even if it looks bright to you.
- Too much warmth: warm air makes them grow fast and thin.
- Crowding: seedlings packed together compete and stretch.

Move them to the brightest spot you have, or put a simple grow light about ten centimetres \
above the leaves for fourteen to sixteen hours a day.<end_of_turn>
<start_of_turn>user
I do have a lamp. Can I save the ones that are already leggy, or should I start over?<end_of_turn>
<start_of_turn>model
You can save them. Tomatoes are unusual: they grow roots along any part of the stem that is \
buried. When you move them into bigger pots, plant them deeper, up to just below the first true \
leaves. The buried stem turns into roots and the plant becomes sturdier.

A light breeze also helps. Brushing your hand across the tops once or twice a day, or running \
a small fan nearby, makes the stems thicker.<end_of_turn>
<start_of_turn>user
Brilliant, thank you. How soon can they go outside?<end_of_turn>
<start_of_turn>model
Wait until nights stay above about ten degrees and there is no more risk of frost. Then \
harden them off over a week or so: put them outside in a sheltered spot for an hour on the \
first day, and leave them out a little longer each day, until they stay out overnight.<end_of_turn>
<start_of_turn>user
Do they need anything special when I plant them in the garden?<end_of_turn>
<start_of_turn>model
"""},
    {"name": "multilingual-numbers", "kind": "numbers and other languages", "positions": 320, "text": """\
Rapport trimestriel / Quartalsbericht / Informe trimestral — T3 2024

Ventes totales : 1 284 530,75 € (+12,4 % par rapport au T2).
Gesamtumsatz: 1.284.530,75 € (+12,4 % gegenüber Q2).
Ventas totales: 1.284.530,75 € (un 12,4 % más que en el T2).

Région      | Juillet   | Août      | Septembre
Nord        | 182 004   | 176 950   | 201 337
Sud         | 94 218    | 101 472   | 99 860
Est         | 57 390    | 61 006    | 64 215

Die Lieferzeiten sind von durchschnittlich 4,8 auf 3,9 Tage gesunken; 97,2 % aller Bestellungen \
kamen pünktlich an. Im September wurden 18 432 Pakete verschickt, davon 2 117 ins Ausland.

El 15/09/2024 a las 14:30 se firmó el contrato con el proveedor de Valencia por 36 meses, \
con una revisión de precios cada 12 meses (IPC + 1,5 %).

東京支店の売上は前年同期比で8.3%増加しました。
Число клиентов выросло до 12 905 человек.
π ≈ 3.14159265, e ≈ 2.71828183, √2 ≈ 1.41421356; 2^10 = 1024, 3^7 = 2187.
"""},
]


# -- llama.cpp -----------------------------------------------------------------
class LlamaCpp:
    """llama.cpp through the llama-cpp-python ctypes bindings of the peer
    source package, loading the peer build's libllama.so."""

    def __init__(self, model: Path, threads: int):
        lib = PEER_ROOT / "build" / "bin"
        if not (lib / "libllama.so").is_file():
            sys.exit(f"{lib}/libllama.so is missing: run scripts/peer-build.sh")
        os.environ.setdefault("LLAMA_CPP_LIB_PATH", str(lib))
        try:
            import diskcache  # noqa: F401  (llama_cpp imports it; only its disk cache uses it)
        except ImportError:
            sys.modules["diskcache"] = types.ModuleType("diskcache")
        sys.path.insert(0, str(PEER_ROOT))
        import llama_cpp as L

        self.L = L
        self._quiet = L.llama_log_callback(lambda level, text, data: None)
        L.llama_log_set(self._quiet, None)
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(str(model).encode(), L.llama_model_default_params())
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.threads = threads
        self.system_info = L.llama_print_system_info().decode().strip()

    def context_params(self, n_tokens: int):
        params = self.L.llama_context_default_params()
        params.n_ctx = max(n_tokens, 512)
        params.n_threads = params.n_threads_batch = self.threads
        return params

    def settings(self) -> str:
        p = self.context_params(1)
        ggml_types = {0: "f32", 1: "f16", 8: "q8_0", 30: "bf16"}
        flash = {-1: "auto", 0: "off", 1: "on"}
        return (f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}'s vendored llama.cpp, CPU, default context "
                f"parameters: KV cache K {ggml_types.get(p.type_k, p.type_k)} / "
                f"V {ggml_types.get(p.type_v, p.type_v)}, flash attention "
                f"{flash.get(p.flash_attn_type, p.flash_attn_type)}, n_batch {p.n_batch}, "
                f"n_ubatch {p.n_ubatch}, {self.threads} threads; one llama_decode per prompt")

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode()
        buf = (self.L.llama_token * (len(raw) + 8))()
        n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), True, True)
        if n < 0:
            raise RuntimeError(f"llama_tokenize failed ({n})")
        return list(buf[:n])

    def logits(self, tokens: list[int]) -> np.ndarray:
        L = self.L
        ctx = L.llama_init_from_model(self.model, self.context_params(len(tokens)))
        batch = L.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, True
            batch.n_tokens = len(tokens)
            if L.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            ptr = L.llama_get_logits(ctx)
            return np.ctypeslib.as_array(ptr, shape=(len(tokens), self.n_vocab)).copy()
        finally:
            L.llama_batch_free(batch)
            L.llama_free(ctx)


# -- report --------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {mem_kb / 2**20:.0f} GiB RAM"
    except OSError:
        mem = ""
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}"


def cell(figs: dict | None, key: str) -> str:
    if figs is None:
        return "not measured"
    value = figs[key]
    return f"{100 * value:.1f} %" if key == "top1_agreement" else f"{value:.4g}"


def write_doc(prompts, strata_figs, llama_figs, llama_info: dict, strata_note: str) -> None:
    rows = [(p["name"], p["kind"], len(p["tokens"])) for p in prompts]
    rows.append(("overall", "all positions", sum(len(p["tokens"]) for p in prompts)))
    header = ("| prompt | positions | max abs: strata | max abs: llama.cpp | mean abs: strata "
              "| mean abs: llama.cpp | top-1: strata | top-1: llama.cpp |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for name, kind, n in rows:
        ours, theirs = strata_figs.get(name), llama_figs.get(name)
        cells = [cell(fig, key) for key in gr.FIGURES for fig in (ours, theirs)]
        lines.append(f"| {name} ({kind}) | {n} | " + " | ".join(cells) + " |")
    DOC.write_text(f"""# Correctness: logits against a float reference

How far strata's and llama.cpp's logits are from an exact computation on the
same weights. Model: gemma-3-270m Q4_K_M (`scripts/fetch-model.sh`).

**Reference.** `tests/python/reference.py`: a float64 numpy forward pass
written from `MODEL-FORMATS.md`, over the file's weights decoded exactly
(`gguf.quants.dequantize`). Errors below are the engines' own arithmetic:
activation quantization, f16 storage, float32 summation.

**Figures** over every position of each prompt, teacher-forced (token ids in
`tests/fixtures/gemma_prompts.json`, from llama.cpp's tokenizer):
max abs error and mean abs error of the logits against the reference, and
top-1 agreement (share of positions whose argmax matches the reference's).
The prose prompt runs past gemma's 512-token sliding window.

{header}{chr(10).join(lines)}

- Machine: {llama_info.get("machine", machine())}.
- Command: `python3 scripts/correctness_report.py` (llama.cpp's columns:
  measured {llama_info.get("date", "?")}; `--reuse-llamacpp` keeps them).
- llama.cpp: {llama_info.get("settings", "?")}.
- strata: {strata_note}.

`tests/python/test_gemma_reference.py` fails unless strata is at least as
close as llama.cpp on every figure of every row.

## Checking the reference against llama.cpp's own arithmetic

With every weight of this model converted to F32 and llama.cpp's KV cache in
F32, llama.cpp's intermediate tensors (RoPE on local and global layers,
attention, norms) match the reference's to ~1e-7 relative given the same
inputs, and its final logits come within 0.025 (mean 0.0015) of the
reference over 640 positions. What remains is llama.cpp's GELU, which on the
CPU rounds input and output through an fp16 lookup table; emulating that
table in the reference brings layers 0-1 to ~1e-7 relative. A 513-token
window instead of 512 would move logits past position 512 by up to 0.4, so
the window's edge (key p' visible from p iff p - p' < 512) is llama.cpp's.
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reuse-llamacpp", action="store_true",
                    help="keep the committed fixtures; take llama.cpp's figures from them")
    ap.add_argument("--no-strata", action="store_true", help="leave strata's columns empty")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    model_path = gr.model_path()
    if args.reuse_llamacpp:
        prompts = gr.load_prompts()
        llama_info = json.loads(gr.LLAMACPP_FIXTURE.read_text())
        llama = None
    else:
        llama = LlamaCpp(model_path, args.threads)
        prompts = []
        for p in PROMPTS:
            tokens = llama.tokenize(p["text"])
            if len(tokens) < p["positions"]:
                sys.exit(f"prompt {p['name']} has {len(tokens)} tokens, needs {p['positions']}")
            prompts.append({"name": p["name"], "kind": p["kind"], "text": p["text"],
                            "tokens": tokens[:p["positions"]]})
        gr.PROMPTS_FIXTURE.write_text(json.dumps({
            "model": "gemma-3-270m-q4_k_m.gguf",
            "tokenizer": f"llama.cpp (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}), add_special and "
                         "parse_special on, cut to the first `positions` tokens",
            "prompts": prompts}, indent=1, ensure_ascii=False) + "\n")
        llama_info = {"machine": machine(), "settings": llama.settings(),
                      "system_info": llama.system_info,
                      "date": datetime.date.today().isoformat(),
                      "tokens_sha256": gr.tokens_digest(prompts), "prompts": {}}

    strata_note = "not measured (no binary: build it, or pass STRATA_BIN)"
    run_strata = not args.no_strata
    if run_strata:
        try:
            binary = strata_cli.strata_binary().resolve()
            shown = binary.relative_to(REPO) if binary.is_relative_to(REPO) else binary
            strata_note = f"`{shown} logits` with default settings"
        except strata_cli.StrataMissing as e:
            print(f"note: {e}; strata's columns left empty", file=sys.stderr)
            run_strata = False

    model = gr.load_model()
    strata_figs: dict[str, dict] = {}
    for p in prompts:
        ref = model.logits(p["tokens"])
        if llama is not None:
            llama_info["prompts"][p["name"]] = gr.figures(llama.logits(p["tokens"]), ref)
        if run_strata:
            strata_figs[p["name"]] = gr.figures(strata_cli.strata_logits(model_path, p["tokens"]), ref)
        print(f"{p['name']}: llama.cpp {llama_info['prompts'][p['name']]}; "
              f"strata {strata_figs.get(p['name'], '-')}", file=sys.stderr)
        del ref
    llama_info["overall"] = gr.overall([llama_info["prompts"][p["name"]] for p in prompts])
    if strata_figs:
        strata_figs["overall"] = gr.overall([strata_figs[p["name"]] for p in prompts])
    if llama is not None:
        gr.LLAMACPP_FIXTURE.write_text(json.dumps(llama_info, indent=1) + "\n")
    llama_figs = {**llama_info["prompts"], "overall": llama_info["overall"]}
    write_doc(prompts, strata_figs, llama_figs, llama_info, strata_note)
    print(f"wrote {DOC.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
