#!/usr/bin/env python3
"""The side-by-side benchmark suite behind `scripts/bench` (issue 11).

Starts PostgreSQL (a throwaway cluster, or DATABASE_URL), our three services and the two Express
servers on free loopback ports, then measures, in interleaved rounds: our full path (HTTP through
the gateway to resource-service), resource-service alone over gRPC (h2load), and the tutorials'
Express + jsonwebtoken server with a string secret and with a KeyObject, all reading the same
person row from the same database. Then one sign-in round and the login storm. It prints one
markdown report and writes it to bench/results.md; every process and the cluster are stopped on
exit, however it exits.

`--smoke` runs one very short round on the debug build and fails unless every target answered
with 200s (or grpc-status 0) and the report was written; it checks that the suite works, never
its figures.
"""


import argparse
import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

from load import (READ_TARGETS, Meter, measure_read, measure_signin, measure_storm,
                  peak_rss_kib, percentile)
from stack import BENCH, ROOT, BenchError, Postgres, Processes, Stack, build, ensure_tools, log


# --- Report -------------------------------------------------------------------------------------


PROBE_CALLS = [("jwks", "JWKS (GetJwks)"), ("refresh", "refresh (Refresh)"),
               ("validate", "introspection (ValidateToken)")]


def fmt_rps(values):
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:,.0f}"
    return f"{mid:,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def fmt_us(value):
    if value >= 1_000_000:
        return f"{value / 1_000_000:.2f} s"
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} µs"


def fmt_ratio(values):
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.2f}×"
    return f"{mid:.2f}× ({min(values):.2f}–{max(values):.2f})"


def report(args, profile, rounds, signin, storm, peak_rss, load_before, load_after, owns_pg):
    settings = "".join(f" --auth-env {e}" for e in args.auth_env)
    lines = [
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`scripts/bench{' --smoke' if args.smoke else ''}{' --storm-only' if args.storm_only else ''}"
        f"{settings}` ({profile} build): {args.rounds} "
        f"interleaved round(s) of {args.duration} s per target, {args.connections} connections, "
        f"{args.threads} load threads; GET one person by id, one PostgreSQL read per request. "
        f"{os.cpu_count()} CPUs; load average {load_before} before, {load_after} after "
        f"(the load generators share the CPUs with the servers).",
        "",
        "| target | req/s median (range) | p50 | p99 | CPU per request | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, cpu_names in (READ_TARGETS if rounds else []):
        results = [r[key] for r in rounds]
        cpu = ", ".join(f"{n} {statistics.median(r['cpu_us'][n] for r in results):.0f} µs"
                        for n in cpu_names)
        if owns_pg:
            cpu += f", postgres {statistics.median(r['cpu_us']['postgres'] for r in results):.0f} µs"
        rss = ", ".join(f"{n} {peak_rss[n] / 1024:.0f} MiB" for n in cpu_names)
        lines.append(
            f"| {label} | {fmt_rps([r['rps'] for r in results])} "
            f"| {fmt_us(statistics.median(r['p50_us'] for r in results))} "
            f"| {fmt_us(statistics.median(r['p99_us'] for r in results))} | {cpu} | {rss} |")
    cpu = ", ".join(f"{n} {signin['cpu_us'][n]:.0f} µs" for n in ["gateway", "auth-service"])
    lines.append(
        f"| sign-in through the gateway (argon2id) | {signin['accepted_rps']:,.1f} accepted/s "
        f"| {fmt_us(signin['p50_us'])} | {fmt_us(signin['p99_us'])} | {cpu} "
        f"| auth-service {peak_rss['auth-service'] / 1024:.0f} MiB |")

    def ratio(a, b):
        return fmt_ratio([r[a]["rps"] / r[b]["rps"] for r in rounds])

    if rounds:
        lines += [
            "",
            "Medians of the per-round req/s ratios:",
            "",
            f"- ours / Express string secret: {ratio('ours', 'express-string')}",
            f"- ours / Express KeyObject: {ratio('ours', 'express-keyobject')}",
            f"- gateway hop (ours / resource-service gRPC alone): {ratio('ours', 'grpc')}",
        ]
    lines += [
        "",
        f"Login storm: {args.storm_duration} s of sign-ins at {storm['rate']:,.0f}/s "
        f"({args.storm_factor:g}× the sign-in throughput above, at least "
        f"{args.storm_min_rate:.0f}/s) while "
        f"{args.storm_read_connections} connections read through the gateway, each pausing "
        f"{args.storm_read_delay_ms} ms between reads. Each sign-in is a new connection.",
        "",
        "| reads | req/s | p50 | p99 |",
        "|---|---|---|---|",
    ]
    for name in ["idle", "storm"]:
        r = storm[name]
        lines.append(f"| {'alone' if name == 'idle' else 'during the storm'} | {r['rps']:,.0f} "
                     f"| {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} |")
    calls = storm["calls"]
    lines += [
        "",
        f"auth-service's other calls through the gateway, each on one connection every "
        f"{args.storm_probe_interval_ms} ms (bench/probe.py), alone and during the storm; the "
        f"last column is the storm's p99 over the p99 alone:",
        "",
        "| call | calls alone / storm | p50 alone | p99 alone | p50 storm | p99 storm | p99 ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [("reads (GetPerson via resource-service)", storm["idle"], storm["storm"])] + [
        (label, calls["idle"][key], calls["storm"][key])
        for key, label in PROBE_CALLS]
    for label, idle, busy in rows:
        lines.append(f"| {label} | {idle['requests']} / {busy['requests']} "
                     f"| {fmt_us(idle['p50_us'])} | {fmt_us(idle['p99_us'])} "
                     f"| {fmt_us(busy['p50_us'])} | {fmt_us(busy['p99_us'])} "
                     f"| {busy['p99_us'] / max(idle['p99_us'], 1):.2f}× |")
    for when in ["idle", "storm"]:
        for key, label in PROBE_CALLS:
            bad = {s: n for s, n in calls[when][key]["statuses"].items() if s != "200"}
            if bad:
                lines.append(f"\n{label} ({'alone' if when == 'idle' else 'storm'}) answered "
                             f"other than 200: {bad}")
    lines += ["", "| sign-ins | count | share | p50 | p99 |", "|---|---|---|---|---|"]
    sent = max(storm["sent"], 1)
    names = {200: "accepted (200)", 429: "refused (429)", 0: "transport error"}
    for status in sorted(storm["by_status"], key=lambda s: (s not in (200, 429), s)):
        values = storm["by_status"][status]
        lines.append(f"| {names.get(status, f'status {status}')} | {len(values)} "
                     f"| {len(values) / sent:.0%} | {fmt_us(percentile(values, 50))} "
                     f"| {fmt_us(percentile(values, 99))} |")
    if storm["skipped"]:
        lines.append(f"| not sent (client had 512 waiting) | {storm['skipped']} | | | |")
    accepted = len(storm["by_status"].get(200, []))
    lines += ["", f"Of the sign-ins sent during the storm, {accepted / args.storm_duration:,.1f}/s were accepted."]
    if not storm["by_status"].get(429):
        lines[-1] += (" None was refused: the hash queue never filled, so the server kept up "
                      "with this rate; raise `--storm-factor` to see refusals.")
    return "\n".join(lines) + "\n"


# --- Main ---------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="one very short round on the debug build; checks that it runs")
    parser.add_argument("--profile", choices=["release", "debug"], default="release",
                        help="which build to measure (--smoke: debug)")
    parser.add_argument("--no-build", action="store_true",
                        help="use the binaries already in the target directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per target and round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--signin-duration", type=int, default=10)
    parser.add_argument("--storm-duration", type=int, default=10)
    parser.add_argument("--storm-read-connections", type=int, default=8)
    parser.add_argument("--storm-read-delay-ms", type=int, default=5)
    parser.add_argument("--storm-factor", type=float, default=2.0,
                        help="the storm's sign-in rate as a multiple of the measured throughput")
    parser.add_argument("--storm-min-rate", type=float, default=20.0,
                        help="sign-ins per second the storm sends at least")
    parser.add_argument("--storm-rate", type=float, default=None,
                        help="sign-ins per second the storm sends, instead of the factor above "
                             "(to compare settings at one rate)")
    parser.add_argument("--storm-probe-interval-ms", type=int, default=20,
                        help="pause between two JWKS, refresh or introspection probes")
    parser.add_argument("--storm-only", action="store_true",
                        help="skip the read rounds: sign-in throughput and the storm only")
    parser.add_argument("--auth-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra environment variable for auth-service, e.g. "
                             "AUTH_HASH_PRIORITY=normal (repeatable)")
    parser.add_argument("--out", default=None,
                        help="where to write the report (default bench/results.md, "
                             "bench/results-smoke.md with --smoke)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.connections, args.threads = 1, 2, 4, 1
        args.signin_duration, args.storm_duration = 3, 2
    if args.storm_only:
        args.rounds = 0
    for entry in args.auth_env:
        if "=" not in entry or not entry.startswith("AUTH_"):
            parser.error(f"--auth-env takes AUTH_NAME=VALUE, not {entry!r}")
    args.out = args.out or os.path.join(BENCH, "results-smoke.md" if args.smoke else "results.md")
    return args


def smoke_check(rounds, signin, storm, out):
    problems = []
    for key, label, _ in READ_TARGETS:
        for r in rounds:
            if r[key]["requests"] == 0 or r[key]["failed"]:
                problems.append(f"{label}: {r[key]['requests']} answers, {r[key]['failed']} "
                                f"not 200 / grpc-status 0")
    if signin["accepted"] == 0:
        problems.append(f"sign-in: no 200 among {signin['statuses']}")
    for name in ["idle", "storm"]:
        r = storm[name]
        if r["requests"] == 0 or r["errors"]["status"]:
            problems.append(f"storm reads ({name}): {r['requests']} answers, "
                            f"{r['errors']['status']} not 200")
    for name in ["idle", "storm"]:
        for key, label in PROBE_CALLS:
            r = storm["calls"][name][key]
            if r["requests"] == 0 or r["statuses"].get("200", 0) != r["requests"]:
                problems.append(f"{label} ({name}): statuses {r['statuses']}")
    if not (storm["by_status"].get(200) or storm["by_status"].get(429)):
        problems.append(f"storm sign-ins: none answered 200 or 429 ({list(storm['by_status'])})")
    with open(out) as f:
        text = f.read()
    for _, label, _ in READ_TARGETS:
        if label not in text:
            problems.append(f"the report has no row for {label}")
    return problems


def main():
    args = parse_args()
    profile = "debug" if args.smoke else args.profile
    started = time.monotonic()
    ensure_tools()
    if args.no_build:
        target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
        bin_dir = os.path.join(target_dir, profile)
    else:
        bin_dir = build(profile)

    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    log_dir = os.path.join(target, "bench-logs")
    shutil.rmtree(log_dir, ignore_errors=True)
    os.makedirs(log_dir)
    procs = Processes(log_dir)
    pg = Postgres()
    try:
        pg.start()
        stack = Stack(procs, pg, bin_dir)
        stack.auth_env = dict(entry.split("=", 1) for entry in args.auth_env)
        stack.start()
        meter = Meter(stack)
        load_before = "{:.1f}".format(os.getloadavg()[0])

        rounds = []
        for i in range(args.rounds):
            # Each round starts with a different target so none always runs first.
            order = READ_TARGETS[i % len(READ_TARGETS):] + READ_TARGETS[:i % len(READ_TARGETS)]
            results = {}
            for key, label, _ in order:
                log(f"round {i + 1}/{args.rounds}: {label}")
                results[key] = measure_read(key, stack, meter, args, log_dir)
                log(f"  {results[key]['rps']:,.0f} req/s, p99 {fmt_us(results[key]['p99_us'])}")
            rounds.append(results)
        log("sign-in throughput")
        signin = measure_signin(stack, meter, args)
        log(f"  {signin['accepted_rps']:,.1f} accepted/s, statuses {signin['statuses']}")
        log("login storm")
        storm = measure_storm(stack, args, signin["accepted_rps"])
        peak_rss = {name: peak_rss_kib(pid) for name, pid in stack.pids().items()}
        for name in stack.pids():
            procs.check_running(name)
        load_after = "{:.1f}".format(os.getloadavg()[0])

        text = report(args, profile, rounds, signin, storm, peak_rss, load_before, load_after,
                      pg.cluster_dir is not None)
        with open(args.out, "w") as f:
            f.write(text)
        print(text)
        log(f"written to {os.path.relpath(args.out, ROOT)} ({time.monotonic() - started:.0f} s)")
        if args.smoke:
            problems = smoke_check(rounds, signin, storm, args.out)
            if problems:
                raise BenchError("the smoke run failed:\n  " + "\n  ".join(problems))
            log("smoke run: every target answered")
    except BenchError:
        for name in procs.procs:
            print(f"--- last lines of {name}'s log:\n{procs.tail(name)}", file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        pg.stop()


def on_signal(signum, _frame):
    # Turning the signal into an exception runs main's clean-up.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        main()
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as e:
        print(f"bench: {' '.join(map(str, e.cmd))} failed with {e.returncode}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
