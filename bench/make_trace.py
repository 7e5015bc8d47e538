#!/usr/bin/env python3
"""bench/make_trace.py: write a small synthetic request trace in BurstGPT's CSV
format, for bench/loadgen.py to replay against an OpenAI-compatible server.

BurstGPT (Wang et al., 2024) logs one row per LLM request:

    Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type

with Timestamp in seconds from the start of the trace. Its findings shape the
generator: inter-arrival times fit a Gamma distribution whose shape is below 1
(requests come in bursts; shape 1 is a Poisson process), request lengths are
heavy-tailed (drawn here from a lognormal capped at --max-request-tokens) and
responses are shorter (a narrower lognormal capped at --max-response-tokens).
The same seed always writes the same file.

The shipped trace bench/traces/burstgpt-synthetic.csv was made with:

    python3 bench/make_trace.py --requests 48 --rate 0.5 --seed 2 \\
        --mean-request-tokens 200 --max-request-tokens 1024 \\
        --mean-response-tokens 48 --max-response-tokens 128 \\
        -o bench/traces/burstgpt-synthetic.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from dataclasses import dataclass
from typing import TextIO

COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")


@dataclass(frozen=True)
class TraceShape:
    """What the generated trace looks like: arrivals, lengths and caps."""

    requests: int
    rate: float                 # mean requests per second
    burstiness: float           # Gamma shape of inter-arrival times (1 = Poisson)
    mean_request_tokens: float
    max_request_tokens: int
    mean_response_tokens: float
    max_response_tokens: int
    request_sigma: float = 1.0  # lognormal sigma of request tokens
    response_sigma: float = 0.8


def lognormal_tokens(rng: random.Random, mean: float, sigma: float, cap: int) -> int:
    """A token count from a lognormal whose uncapped mean is `mean`, in [1, cap]."""
    mu = math.log(mean) - sigma * sigma / 2
    return max(1, min(cap, round(rng.lognormvariate(mu, sigma))))


def make_rows(shape: TraceShape, seed: int) -> list[tuple[float, int, int]]:
    """(timestamp, request tokens, response tokens) per request, the first at 0 s.

    Inter-arrival gaps are Gamma(shape=burstiness, scale=1/(rate*burstiness)):
    mean 1/rate whatever the burstiness, the same construction as vLLM's
    benchmark_serving --burstiness."""
    rng = random.Random(seed)
    rows = []
    now = 0.0
    for i in range(shape.requests):
        if i > 0:
            now += rng.gammavariate(shape.burstiness, 1.0 / (shape.rate * shape.burstiness))
        request = lognormal_tokens(rng, shape.mean_request_tokens, shape.request_sigma,
                                   shape.max_request_tokens)
        response = lognormal_tokens(rng, shape.mean_response_tokens, shape.response_sigma,
                                    shape.max_response_tokens)
        rows.append((round(now, 3), request, response))
    return rows


def write_trace(rows: list[tuple[float, int, int]], out: TextIO, model: str = "ChatGPT",
                log_type: str = "Conversation log") -> None:
    """Write rows as BurstGPT CSV (header first, Total = Request + Response)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for timestamp, request, response in rows:
        writer.writerow((f"{timestamp:.3f}", model, request, response, request + response, log_type))


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write a synthetic request trace in BurstGPT's CSV format (seeded).")
    parser.add_argument("--requests", type=positive_int, default=48, help="number of requests (48)")
    parser.add_argument("--rate", type=positive_float, default=0.5, help="mean requests per second (0.5)")
    parser.add_argument("--burstiness", type=positive_float, default=0.5,
                        help="Gamma shape of the inter-arrival times: 1 is Poisson, below 1 burstier (0.5)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--mean-request-tokens", type=positive_float, default=200.0,
                        help="mean of the uncapped request-token lognormal (200)")
    parser.add_argument("--max-request-tokens", type=positive_int, default=1024, help="cap (1024)")
    parser.add_argument("--mean-response-tokens", type=positive_float, default=48.0,
                        help="mean of the uncapped response-token lognormal (48)")
    parser.add_argument("--max-response-tokens", type=positive_int, default=128, help="cap (128)")
    parser.add_argument("--model", default="ChatGPT", help="the Model column (ChatGPT)")
    parser.add_argument("--log-type", default="Conversation log", help="the Log Type column (Conversation log)")
    parser.add_argument("-o", "--output", default="-", help="output CSV file (default: stdout)")
    args = parser.parse_args(argv)
    if args.mean_request_tokens > args.max_request_tokens:
        parser.error(f"--mean-request-tokens {args.mean_request_tokens:g} is above "
                     f"--max-request-tokens {args.max_request_tokens}")
    if args.mean_response_tokens > args.max_response_tokens:
        parser.error(f"--mean-response-tokens {args.mean_response_tokens:g} is above "
                     f"--max-response-tokens {args.max_response_tokens}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shape = TraceShape(args.requests, args.rate, args.burstiness, args.mean_request_tokens,
                       args.max_request_tokens, args.mean_response_tokens, args.max_response_tokens)
    rows = make_rows(shape, args.seed)
    if args.output == "-":
        write_trace(rows, sys.stdout, args.model, args.log_type)
    else:
        try:
            with open(args.output, "w", newline="") as out:
                write_trace(rows, out, args.model, args.log_type)
        except OSError as e:
            print(f"make_trace: cannot write {args.output}: {e.strerror}", file=sys.stderr)
            return 1
    span = rows[-1][0]
    print(f"make_trace: {len(rows)} requests over {span:.1f} s "
          f"({len(rows) / span if span > 0 else float('inf'):.2f} req/s), "
          f"mean {sum(r[1] for r in rows) / len(rows):.0f} request tokens "
          f"(max {max(r[1] for r in rows)}), mean {sum(r[2] for r in rows) / len(rows):.0f} "
          f"response tokens (max {max(r[2] for r in rows)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
