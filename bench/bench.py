#!/usr/bin/env python3
"""The side-by-side benchmark suite behind `scripts/bench` (issue 11).

Starts PostgreSQL (a throwaway cluster, or DATABASE_URL), our three services and the two Express
servers on free loopback ports, then measures, in interleaved rounds: our full path (HTTP through
the gateway to resource-service), resource-service alone over gRPC (h2load), and the tutorials'
Express + jsonwebtoken server with a string secret and with a KeyObject, all reading the same
person row from the same database. Then sign-in capacity (a closed loop within what auth-service
admits) and the flood of refusals a closed loop of 32 clients makes, refresh and
client-credentials throughput per core of auth-service CPU beside Keycloak's published sizing,
each service's memory, and the login storm. Before the stack starts, the cost of issuing and
verifying an EdDSA token beside the bare Ed25519 operations (token/examples/floor.rs, which
alternates them in short batches so that their ratios survive a shared machine), and the
sign-out lag: how long after a sign-out every resource-service replica refuses the token
(tests/benches/sign_out_lag.rs, on a stack of its own and the same database). It prints one
markdown report and writes it to bench/results.md; every process and the cluster are stopped on
exit, however it exits.

`--smoke` runs one very short round of everything on the debug build and fails unless every
target answered with 200s (or grpc-status 0), every sign-in, refresh and grant row got successful
answers, the sign-out lag benchmark ran (two sign-outs), and the report was written; it checks
that the suite works, never its figures.
"""


import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

from load import (READ_TARGETS, STORM_SETTLE_S, Meter, measure_client_credentials, measure_read,
                  measure_refresh, measure_signin, measure_storm, peak_rss_kib, percentile)
from stack import (BENCH, ROOT, BenchError, Postgres, Processes, Stack, build, build_floor,
                   ensure_tools, log)


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


# Keycloak's published sizing per vCPU (its "Concepts for sizing CPU and memory resources"):
# 15 password sign-ins/s, 120 refresh-token requests/s, 120–200 client-credentials grants/s, and
# 1–1.25 GB of base memory per pod. The issue's target: 10× per core of auth-service CPU.
KEYCLOAK_SIGNIN_PER_VCPU = 15
KEYCLOAK_REFRESH_PER_VCPU = 120
KEYCLOAK_GRANTS_PER_VCPU = (120, 200)
TARGET_FACTOR = 10
# Per service before the first sign-in; auth-service after any storm: this plus 19 MiB per hash
# worker (the argon2 memory each worker keeps), the budget auth-service sizes its workers by.
RSS_TARGET_MIB = 64
HASH_WORKER_MIB = 19

SIGNIN_CAPACITY = "sign-in capacity"
SIGNIN_FLOOD = "closed-loop flood"
REFRESH = "refresh (POST /api/auth/refresh)"
GRANTS = "client-credentials grant (POST /oauth/token)"


def fmt_status_pct(result, status):
    timed = result["by_status"].get(status)
    if not timed:
        return "–"
    return f"{fmt_us(timed['p50_us'])} / {fmt_us(timed['p99_us'])}"


def fmt_cpu(result, owns_pg, key="cpu_us"):
    names = ["gateway", "auth-service"] + (["postgres"] if owns_pg else [])
    return ", ".join(f"{n} {fmt_us(result[key][n])}" for n in names)


def met(ok):
    return "yes" if ok else "**no**"


# The issue's targets: issuing ≤ 1.3× the bare signature, a cache-miss verification ≤ 1.15× the
# bare verification.
ISSUE_FLOOR, VERIFY_FLOOR = 1.3, 1.15
FLOOR_ROWS = "| issue an EdDSA access token |"


def measure_floor(bin_dir, args):
    """token/examples/floor.rs: medians of interleaved batches (see there)."""
    rounds, batch = (3, 5) if args.smoke else (300, 100)
    binary = os.path.join(bin_dir, "examples", "floor")
    if not os.path.exists(binary):
        # --no-build (scripts/test's smoke run) reuses the services; the example is small.
        release = ["--release"] if os.path.basename(bin_dir) == "release" else []
        build_floor(release)
    out = subprocess.run([binary, str(rounds), str(batch)], check=True, capture_output=True,
                         text=True).stdout
    line = next((l for l in out.splitlines() if l.startswith("FLOOR_JSON ")), None)
    if line is None:
        raise BenchError(f"the floor example printed no FLOOR_JSON line:\n{out}")
    return json.loads(line.split(" ", 1)[1])


# The sessions issue's promise: a signed-out token is refused everywhere within a second.
SIGN_OUT_LAG_TARGET_MS = 1000
SIGN_OUT_LAG_ROWS = [("answered", "the sign-out answered (204)"),
                     ("one_replica", "refused by one replica"),
                     ("every_replica", "refused by every replica")]


# Where `--readme` puts the report: between these lines of the README.
README = os.path.join(ROOT, "README.md")
README_START = "<!-- scripts/bench --readme: its report starts here -->"
README_END = "<!-- scripts/bench --readme: its report ends here -->"


def with_report(readme, text):
    """`readme` with the report between its markers replaced by `text`."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start or readme.count(README_START) + readme.count(README_END) != 2:
        raise BenchError(f"README.md needs one line {README_START!r} and, after it, one line "
                         f"{README_END!r} around the report")
    head = readme[:start + len(README_START)]
    return f"{head}\n{text.rstrip()}\n{readme[end:]}"


def measure_sign_out_lag(args, pg, profile):
    """tests/benches/sign_out_lag.rs on this PostgreSQL, with a stack of its own (auth-service
    and resource-service replicas, a gateway): `cargo bench` on the release
    build, its `cargo test` form (the same program, a looser bound) on the debug build."""
    # --workspace resolves features as the build above did, so nothing is built twice.
    cargo = (["cargo", "bench", "--quiet", "--workspace", "--bench", "sign_out_lag"]
             if profile == "release" else
             ["cargo", "test", "--quiet", "--workspace", "--bench", "sign_out_lag"])
    out = subprocess.run([*cargo, "--", "--sign-outs", str(args.sign_outs)], cwd=ROOT,
                         env={**os.environ, "DATABASE_URL": pg.url}, capture_output=True,
                         text=True, timeout=3600, check=False)
    line = next((l for l in out.stdout.splitlines() if l.startswith("SIGN_OUT_LAG_JSON ")), None)
    if out.returncode != 0 or line is None:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
        raise BenchError(f"the sign-out lag benchmark failed ({out.returncode}):\n{tail}")
    return json.loads(line.split(" ", 1)[1])


def sign_out_lag_report(lag):
    worst = lag["every_replica"]["max_ms"]
    lines = [
        "",
        f"Sign-out lag (tests/benches/sign_out_lag.rs, run before the stack above starts, with "
        f"its own on the same PostgreSQL: {lag['auth_replicas']} auth-service replicas, "
        f"{lag['replicas']} resource-service replicas and a gateway): {lag['sign_outs']} "
        f"sign-outs one after "
        f"another, each of a session whose token every resource replica had verified and "
        f"cached; from sending "
        f"`POST /api/auth/signout` until the replica answers `UNAUTHENTICATED`, asked every "
        f"{lag['poll_ms']:g} ms.",
        "",
        "| sign-outs | p50 | p99 | max |",
        "|---|---|---|---|",
    ]
    for key, label in SIGN_OUT_LAG_ROWS:
        r = lag[key]
        lines.append(f"| {label} | {fmt_us(r['p50_ms'] * 1000)} | {fmt_us(r['p99_ms'] * 1000)} "
                     f"| {fmt_us(r['max_ms'] * 1000)} |")
    lines += ["", f"Every replica refused every signed-out token within "
                  f"{SIGN_OUT_LAG_TARGET_MS / 1000:g} s (the sessions' promise): "
                  f"{met(worst <= SIGN_OUT_LAG_TARGET_MS)} (slowest {fmt_us(worst * 1000)})."]
    return lines


def floor_report(floor):
    return [
        "",
        f"Crypto at the floor: {floor['rounds']} rounds, each timing {floor['batch']} calls of "
        "the bare Ed25519 signature, issuing a token, the bare verification and verifying a "
        "token (the cache-miss path: signature, claims, audience and expiry), each twice per "
        "round in mirrored order; the ratio is the median of the per-round ratios (token/examples/floor.rs, "
        "run before the stack starts).",
        "",
        "| operation | µs per call (median) | bare Ed25519 | ratio | target | met |",
        "|---|---|---|---|---|---|",
        f"{FLOOR_ROWS} {floor['issue_us']:.1f} | sign {floor['sign_us']:.1f} "
        f"| {floor['issue_ratio']:.2f}× | ≤ {ISSUE_FLOOR}× | {met(floor['issue_ratio'] <= ISSUE_FLOOR)} |",
        f"| verify an EdDSA access token | {floor['verify_us']:.1f} "
        f"| verify {floor['bare_verify_us']:.1f} | {floor['verify_ratio']:.2f}× "
        f"| ≤ {VERIFY_FLOOR}× | {met(floor['verify_ratio'] <= VERIFY_FLOOR)} |",
    ]


def token_report(args, signin, flood, refresh, grants, workers, owns_pg):
    """The sign-in rounds, and the token endpoints per core beside Keycloak's sizing."""
    lines = [
        "",
        "Sign-ins through the gateway (argon2id), each round a closed loop of clients signing "
        "one account in over and over, one wrk thread per connection so that every answer is "
        f"timed by its status. The capacity round keeps {signin['connections']} sign-ins in "
        f"flight ({workers} hash workers + {signin['connections'] - workers}), within what "
        "auth-service admits, so none should be refused; the flood shows what a closed loop of "
        "more clients than that gets: refusals (429) at once, which keep the CPUs busy while the "
        "hashing threads run at idle priority (`AUTH_HASH_PRIORITY`). CPU per answer, "
        f"{args.signin_duration} s each:",
        "",
        "| round | accepted/s | refused/s (429) | accepted p50 / p99 | refused p50 / p99 "
        "| CPU per answer |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in [(f"{SIGNIN_CAPACITY}, {signin['connections']} connections", signin),
                     (f"{SIGNIN_FLOOD}, {flood['connections']} connections", flood)]:
        lines.append(f"| {label} | {r['ok_rps']:,.1f} | {r['refused_rps']:,.1f} "
                     f"| {fmt_status_pct(r, '200')} | {fmt_status_pct(r, '429')} "
                     f"| {fmt_cpu(r, owns_pg)} |")
    for label, r in [(SIGNIN_CAPACITY, signin), (SIGNIN_FLOOD, flood)]:
        other = {k: v for k, v in r["statuses"].items() if k not in ("200", "429")}
        if other or r["transport_errors"]:
            lines.append(f"\n{label}: other answers {other}, wrk errors {r['transport_errors']}")
    if signin["statuses"].get("429"):
        lines.append(f"\nThe capacity round had {signin['statuses']['429']} refusals: "
                     "auth-service admitted fewer than it was sent (`AUTH_HASH_PER_CLIENT`, "
                     "`AUTH_HASH_MAX_WAIT`); its figure is below capacity.")

    def row(label, r, keycloak, target):
        per_core = r["ok_per_auth_core"]
        if isinstance(keycloak, tuple):
            low, high = keycloak
            versus = f"{per_core / high:.1f}× (of {high}) – {per_core / low:.1f}× (of {low})"
            keycloak_text = f"{low}–{high}/s"
            floor = TARGET_FACTOR * high
        else:
            versus = f"{per_core / keycloak:.1f}×"
            keycloak_text = f"{keycloak}/s"
            floor = TARGET_FACTOR * keycloak
        if target:
            target_text = f"≥ {floor:,}/s ({TARGET_FACTOR}× Keycloak)"
            verdict = met(per_core >= floor)
        else:
            target_text = "none: argon2id at OWASP cost, slow by design"
            verdict = "–"
        return (f"| {label} | {r['ok_rps']:,.0f} | {fmt_status_pct(r, '200')} "
                f"| {fmt_cpu(r, owns_pg, 'cpu_us_per_ok')} | {per_core:,.0f}/s | {keycloak_text} "
                f"| {versus} | {target_text} | {verdict} |")

    lines += [
        "",
        "Token endpoints per core vs Keycloak's sizing: successful answers per second of "
        "auth-service CPU time (utime + stime; the gateway's and PostgreSQL's CPU per answer are "
        "counted apart), beside Keycloak's published sizing per vCPU. Refresh: one session per "
        f"connection ({refresh['connections']}), each refresh spending the token the one before "
        f"returned; grants: one service account, {grants['connections']} connections, "
        f"{args.token_duration} s each.",
        "",
        "| endpoint | answers/s | p50 / p99 | CPU per answer | per core of auth-service CPU "
        "| Keycloak per vCPU | ours / Keycloak | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
        row(f"password sign-in (argon2id, {SIGNIN_CAPACITY})", signin, KEYCLOAK_SIGNIN_PER_VCPU,
            False),
        row(REFRESH, refresh, KEYCLOAK_REFRESH_PER_VCPU, True),
        row(GRANTS, grants, KEYCLOAK_GRANTS_PER_VCPU, True),
    ]
    if refresh["replays"]:
        lines.append(f"\n{REFRESH}: auth-service saw {refresh['replays']} refresh tokens spent "
                     "twice (its log's grace-window lines): those answers were not fresh "
                     "rotations.")
    for label, r in [(REFRESH, refresh), (GRANTS, grants)]:
        if r["failed"]:
            lines.append(f"\n{label}: answers {r['statuses']}, wrk errors "
                         f"{r['transport_errors']}")
    return lines


def memory_report(rss_at_start, peak_rss, workers):
    auth_peak_target = RSS_TARGET_MIB + workers * HASH_WORKER_MIB
    lines = [
        "",
        "Memory: each service's RSS once it is ready, before the first sign-up or sign-in, and "
        "its peak (VmHWM) over the whole run, after the storm. Keycloak's published sizing: "
        "1–1.25 GB of base memory per pod.",
        "",
        "| service | RSS at start | target | met | peak RSS over the run | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, start in rss_at_start.items():
        start_mib, peak_mib = start / 1024, peak_rss[name] / 1024
        if name == "auth-service":
            peak_target = (f"≤ {auth_peak_target} MiB ({RSS_TARGET_MIB} MiB + {workers} hash "
                           f"workers × {HASH_WORKER_MIB} MiB)")
            peak_met = met(peak_mib <= auth_peak_target)
        else:
            peak_target, peak_met = "–", "–"
        lines.append(f"| {name} | {start_mib:.0f} MiB | ≤ {RSS_TARGET_MIB} MiB "
                     f"| {met(start_mib <= RSS_TARGET_MIB)} | {peak_mib:.0f} MiB | {peak_target} "
                     f"| {peak_met} |")
    return lines


def workers_text(args):
    if args.worker_threads == "auto":
        return "the runtime's default worker threads, one per CPU"
    if args.worker_threads == "1":
        return "one async worker thread, as deploy/ runs them"
    return f"{args.worker_threads} async worker threads"


def storm_rows(storm):
    """(label, the quiet windows' results, the storms' results) of reads and each probed call."""
    pairs = storm["pairs"]
    rows = [("reads (GetPerson via resource-service)", [p["idle"] for p in pairs],
             [p["storm"] for p in pairs])]
    for key, label in PROBE_CALLS:
        rows.append((label, [p["calls"]["idle"][key] for p in pairs],
                     [p["calls"]["storm"][key] for p in pairs]))
    return rows


def storm_report(args, storm):
    pairs = storm["pairs"]

    def med(results, key):
        return statistics.median(r[key] for r in results)

    lines = [
        "",
        f"Login storm: {len(pairs)} pair(s) of {args.storm_duration}-second windows, each a quiet "
        f"window and then one of sign-ins at {storm['rate']:,.0f}/s ({args.storm_factor:g}× the "
        f"sign-in capacity above, at least {args.storm_min_rate:.0f}/s), the next pair "
        f"{STORM_SETTLE_S} s after a storm, while {args.storm_read_connections} connections read "
        f"through the gateway, each "
        f"pausing {args.storm_read_delay_ms} ms between reads. Each sign-in is a new connection. "
        f"Each storm is compared with the quiet window just before it; the figures are medians "
        f"over the windows.",
        "",
        "| reads | req/s | p50 | p99 |",
        "|---|---|---|---|",
    ]
    for name, label in [("idle", "alone"), ("storm", "during the storm")]:
        results = [p[name] for p in pairs]
        lines.append(f"| {label} | {med(results, 'rps'):,.0f} | {fmt_us(med(results, 'p50_us'))} "
                     f"| {fmt_us(med(results, 'p99_us'))} |")
    lines += [
        "",
        f"auth-service's other calls through the gateway, each on one connection every "
        f"{args.storm_probe_interval_ms} ms (bench/probe.py), alone and during the storm; the "
        f"last column is the median over the pairs of the storm's p99 over the p99 alone just "
        f"before it (with their range):",
        "",
        "| call | calls alone / storm | p50 alone | p99 alone | p50 storm | p99 storm | p99 ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, idle, busy in storm_rows(storm):
        ratios = [b["p99_us"] / max(i["p99_us"], 1) for i, b in zip(idle, busy)]
        lines.append(f"| {label} | {sum(r['requests'] for r in idle)} / "
                     f"{sum(r['requests'] for r in busy)} "
                     f"| {fmt_us(med(idle, 'p50_us'))} | {fmt_us(med(idle, 'p99_us'))} "
                     f"| {fmt_us(med(busy, 'p50_us'))} | {fmt_us(med(busy, 'p99_us'))} "
                     f"| {fmt_ratio(ratios)} |")
    for n, pair in enumerate(pairs):
        for when in ["idle", "storm"]:
            for key, label in PROBE_CALLS:
                bad = {s: c for s, c in pair["calls"][when][key]["statuses"].items() if s != "200"}
                if bad:
                    lines.append(f"\n{label} ({'alone' if when == 'idle' else 'storm'}, pair "
                                 f"{n + 1}) answered other than 200: {bad}")
    return lines


def report(args, profile, rounds, tokens, storm, peak_rss, load_before, load_after, owns_pg,
           floor, lag):
    signin = tokens["signin"]
    settings = "".join(f" --auth-env {e}" for e in args.auth_env)
    if args.worker_threads != "1":
        settings += f" --worker-threads {args.worker_threads}"
    lines = [
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`scripts/bench{' --smoke' if args.smoke else ''}{' --storm-only' if args.storm_only else ''}"
        f"{settings}` ({profile} build; each of our services on {workers_text(args)}): {args.rounds} "
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
    if floor:
        lines += floor_report(floor)
    if lag:
        lines += sign_out_lag_report(lag)
    lines += token_report(args, signin, tokens["flood"], tokens["refresh"], tokens["grants"],
                          tokens["workers"], owns_pg)
    lines += memory_report(tokens["rss_at_start"], peak_rss, tokens["workers"])
    lines += storm_report(args, storm)
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
    storm_seconds = args.storm_duration * len(storm["pairs"])
    lines += ["", f"Of the sign-ins sent during the storms, {accepted / storm_seconds:,.1f}/s "
                  f"were accepted."]
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
    parser.add_argument("--signin-duration", type=int, default=10,
                        help="seconds of the sign-in capacity round and of the flood")
    parser.add_argument("--signin-connections", type=int, default=None,
                        help="sign-ins in flight in the capacity round (default: auth-service's "
                             "hash workers + 2, within what it admits)")
    parser.add_argument("--flood-connections", type=int, default=32,
                        help="clients of the closed-loop sign-in flood")
    parser.add_argument("--token-duration", type=int, default=10,
                        help="seconds of the refresh round and of the client-credentials round")
    parser.add_argument("--token-connections", type=int, default=16,
                        help="connections (and refresh sessions) of those rounds")
    parser.add_argument("--storm-duration", type=int, default=10,
                        help="seconds of each quiet window and each storm")
    parser.add_argument("--storm-pairs", type=int, default=3,
                        help="pairs of a quiet window and a storm, one after the other")
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
                        help="skip the read rounds: the sign-in, refresh and grant rounds and "
                             "the storm only")
    parser.add_argument("--auth-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra environment variable for auth-service, e.g. "
                             "AUTH_HASH_PRIORITY=normal (repeatable)")
    parser.add_argument("--worker-threads", default="1", metavar="N|auto",
                        help="async worker threads of each of our services (*_WORKER_THREADS): 1 "
                             "as deploy/ runs them (one per CPU a pod requests, each requesting "
                             "under one), or auto for the runtime's default of one per CPU")
    parser.add_argument("--sign-outs", type=int, default=300,
                        help="sign-outs of the sign-out lag benchmark (0 skips it)")
    parser.add_argument("--readme", action="store_true",
                        help="also put the report into README.md, between its markers")
    parser.add_argument("--out", default=None,
                        help="where to write the report (default bench/results.md, "
                             "bench/results-smoke.md with --smoke)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.connections, args.threads = 1, 2, 4, 1
        args.signin_duration, args.storm_duration, args.token_duration = 2, 2, 2
        args.token_connections = 4
        args.storm_pairs = 1
        args.sign_outs = min(args.sign_outs, 2)
    if args.storm_only:
        args.rounds, args.sign_outs = 0, 0
    if args.readme and args.smoke:
        parser.error("--readme takes a full run's report, not --smoke's")
    if args.storm_pairs < 1:
        parser.error("--storm-pairs takes 1 or more")
    if args.sign_outs < 0:
        parser.error("--sign-outs takes 0 (skip) or more")
    if args.worker_threads != "auto" and not (args.worker_threads.isdigit()
                                              and 1 <= int(args.worker_threads) <= 1024):
        parser.error(f"--worker-threads takes a number from 1 to 1024 or auto, "
                     f"not {args.worker_threads!r}")
    for entry in args.auth_env:
        if "=" not in entry or not entry.startswith("AUTH_"):
            parser.error(f"--auth-env takes AUTH_NAME=VALUE, not {entry!r}")
    args.out = args.out or os.path.join(BENCH, "results-smoke.md" if args.smoke else "results.md")
    return args


def smoke_check(rounds, tokens, storm, lag, out):
    problems = []
    labels = [FLOOR_ROWS]
    if lag is None or lag["sign_outs"] < 1:
        problems.append("the sign-out lag benchmark did not run")
    else:
        labels += [f"| {label} |" for _, label in SIGN_OUT_LAG_ROWS]
    for key, label, _ in READ_TARGETS:
        for r in rounds:
            if r[key]["requests"] == 0 or r[key]["failed"]:
                problems.append(f"{label}: {r[key]['requests']} answers, {r[key]['failed']} "
                                f"not 200 / grpc-status 0")
    signin, flood = tokens["signin"], tokens["flood"]
    if signin["ok"] == 0:
        problems.append(f"sign-in capacity: no 200 among {signin['statuses']}")
    # The flood's refusals are answers too; anything but 200 or 429 is not.
    flood_other = {k: v for k, v in flood["statuses"].items() if k not in ("200", "429")}
    if (not (flood["statuses"].get("200") or flood["statuses"].get("429")) or flood_other
            or flood["transport_errors"]):
        problems.append(f"sign-in flood: statuses {flood['statuses']}")
    for label, key in [(REFRESH, "refresh"), (GRANTS, "grants")]:
        r = tokens[key]
        if r["ok"] == 0 or r["failed"]:
            problems.append(f"{label}: statuses {r['statuses']}, wrk errors "
                            f"{r['transport_errors']}")
    if tokens["refresh"]["replays"]:
        problems.append(f"refresh: {tokens['refresh']['replays']} refresh tokens spent twice")
    for name, kib in tokens["rss_at_start"].items():
        if kib <= 0:
            problems.append(f"no RSS read for {name} at start")
    for pair in storm["pairs"]:
        for name in ["idle", "storm"]:
            r = pair[name]
            if r["requests"] == 0 or r["errors"]["status"]:
                problems.append(f"storm reads ({name}): {r['requests']} answers, "
                                f"{r['errors']['status']} not 200")
            for key, label in PROBE_CALLS:
                r = pair["calls"][name][key]
                if r["requests"] == 0 or r["statuses"].get("200", 0) != r["requests"]:
                    problems.append(f"{label} ({name}): statuses {r['statuses']}")
    if not (storm["by_status"].get(200) or storm["by_status"].get(429)):
        problems.append(f"storm sign-ins: none answered 200 or 429 ({list(storm['by_status'])})")
    with open(out) as f:
        text = f.read()
    for label in labels + [label for _, label, _ in READ_TARGETS] + [
            SIGNIN_CAPACITY, SIGNIN_FLOOD, REFRESH, GRANTS, "| auth-service |",
            "| resource-service |", "| gateway |"]:
        if label not in text:
            problems.append(f"the report has no row for {label}")
    return problems


def measure_tokens(stack, meter, args, work_dir):
    """Sign-in capacity and the flood, refresh and client-credentials throughput."""
    workers = stack.hash_workers()
    signin_connections = args.signin_connections or workers + 2
    log(f"sign-in capacity, {signin_connections} connections ({workers} hash workers)")
    signin = measure_signin(stack, meter, signin_connections, args.signin_duration)
    log(f"  {signin['ok_rps']:,.1f} accepted/s, statuses {signin['statuses']}")
    log(f"sign-in flood, {args.flood_connections} connections")
    flood = measure_signin(stack, meter, args.flood_connections, args.signin_duration)
    log(f"  {flood['ok_rps']:,.1f} accepted/s, {flood['refused_rps']:,.0f} refused/s")
    # Fresh sessions, few enough per account that no sign-in ends another's.
    cap = int(stack.auth_env.get("AUTH_MAX_SESSIONS_PER_USER", 20))
    refresh_tokens = stack.refresh_sessions(args.token_connections, max(1, cap // 2))
    log(f"refresh, {args.token_connections} sessions")
    replays_before = stack.refresh_replays()
    refresh = measure_refresh(stack, meter, refresh_tokens, args.token_duration, work_dir)
    # Every refresh must spend a fresh token: a replay would be answered from the grace window
    # (or end the session), not measured.
    refresh["replays"] = stack.refresh_replays() - replays_before
    log(f"  {refresh['ok_rps']:,.0f} refreshes/s, {refresh['ok_per_auth_core']:,.0f} per core, "
        f"statuses {refresh['statuses']}")
    client = stack.service_account()
    log(f"client-credentials grants, {args.token_connections} connections")
    grants = measure_client_credentials(stack, meter, client, args.token_connections,
                                        args.token_duration)
    log(f"  {grants['ok_rps']:,.0f} grants/s, {grants['ok_per_auth_core']:,.0f} per core, "
        f"statuses {grants['statuses']}")
    return {"workers": workers, "signin": signin, "flood": flood, "refresh": refresh,
            "grants": grants, "rss_at_start": stack.rss_at_start}


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
    floor = None
    if not args.storm_only:
        log("crypto floor: issuing and verifying beside the bare Ed25519 operations")
        floor = measure_floor(bin_dir, args)
        log(f"  issue {floor['issue_ratio']:.2f}× the bare signature, verify "
            f"{floor['verify_ratio']:.2f}× the bare verification")
    shutil.rmtree(log_dir, ignore_errors=True)
    os.makedirs(log_dir)
    procs = Processes(log_dir)
    pg = Postgres()
    try:
        pg.start()
        lag = None
        if args.sign_outs:
            log(f"sign-out lag: {args.sign_outs} sign-outs (tests/benches/sign_out_lag.rs)")
            lag_started = time.monotonic()
            lag = measure_sign_out_lag(args, pg, profile)
            every = lag["every_replica"]
            log(f"  refused by every replica: p50 {every['p50_ms']:.1f} ms, p99 "
                f"{every['p99_ms']:.1f} ms, max {every['max_ms']:.1f} ms "
                f"({time.monotonic() - lag_started:.0f} s with the build)")
        stack = Stack(procs, pg, bin_dir)
        stack.auth_env = dict(entry.split("=", 1) for entry in args.auth_env)
        if args.worker_threads != "auto":
            stack.worker_threads = int(args.worker_threads)
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
        tokens = measure_tokens(stack, meter, args, log_dir)
        log("login storm")
        storm = measure_storm(stack, args, tokens["signin"]["ok_rps"])
        peak_rss = {name: peak_rss_kib(pid) for name, pid in stack.pids().items()}
        for name in stack.pids():
            procs.check_running(name)
        load_after = "{:.1f}".format(os.getloadavg()[0])

        text = report(args, profile, rounds, tokens, storm, peak_rss, load_before, load_after,
                      pg.cluster_dir is not None, floor, lag)
        with open(args.out, "w") as f:
            f.write(text)
        print(text)
        log(f"written to {os.path.relpath(args.out, ROOT)} ({time.monotonic() - started:.0f} s)")
        with open(README) as f:
            readme = f.read()
        # Checked on every run, so that a README edit cannot break --readme unnoticed.
        updated = with_report(readme, text)
        if args.readme:
            with open(README, "w") as f:
                f.write(updated)
            log("and into README.md")
        if args.smoke:
            problems = smoke_check(rounds, tokens, storm, lag, args.out)
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
