"""What scripts/bench runs against the stack: wrk, h2load and the open-loop sign-in flood, and
the CPU time and memory of each server process read from /proc."""

import asyncio
import json
import os
import re
import subprocess
import sys
import time

from stack import BENCH, PERSON_ID, BenchError, GET_PERSON, grpc_frame, rss_kib

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- /proc --------------------------------------------------------------------------------------


def cpu_seconds(pid, reaped=False):
    """utime + stime of one process, in seconds; with `reaped`, also its children's that have
    exited and been waited for (cutime + cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def children(pid):
    """The direct children of `pid` (PostgreSQL's backends are the postmaster's children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def peak_rss_kib(pid):
    return rss_kib(pid, "VmHWM")


# --- Load generators ----------------------------------------------------------------------------


def run_wrk(url, connections, threads, duration, env=None):
    """wrk's results as bench/wrk/report.lua prints them. With WRK_TIME_BY_STATUS or
    WRK_REFRESH_TOKENS in `env`, `threads` must equal `connections`."""
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
            "--timeout", "10s", "-s", os.path.join(BENCH, "wrk", "report.lua"), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                         env={**os.environ, **(env or {})}, check=False)
    return parse_wrk(out)


def parse_wrk(out):
    match = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not match:
        raise BenchError(f"wrk failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    result = json.loads(match.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def start_wrk(url, connections, threads, duration, env):
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
            "--timeout", "10s", "-s", os.path.join(BENCH, "wrk", "report.lua"), url]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def run_h2load(port, token, connections, threads, duration, work_dir):
    """h2load POSTing GetPerson frames at resource-service; percentiles from its request log."""
    frame = os.path.join(work_dir, "get-person.grpc")
    with open(frame, "wb") as f:
        f.write(grpc_frame())
    request_log = os.path.join(work_dir, "h2load-requests.tsv")
    argv = ["h2load", "-c", str(connections), "-t", str(threads), "-m", "1", "-D", str(duration),
            "-d", frame, "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", f"authorization: Bearer {token}", f"--log-file={request_log}",
            f"http://127.0.0.1:{port}{GET_PERSON}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    text = out.stdout + out.stderr
    requests = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                         r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    finished = re.search(r"finished in ([\d.]+)(m?s)", text)
    data = re.search(r"\((\d+)\) data", text)
    if out.returncode != 0 or not requests or not finished:
        raise BenchError(f"h2load failed ({out.returncode}):\n{text}")
    done, succeeded = int(requests.group(3)), int(requests.group(4))
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies, non_200 = [], 0
    with open(request_log) as f:
        for line in f:
            fields = line.split("\t")
            if len(fields) >= 3:
                latencies.append(int(fields[2]))
                non_200 += fields[1] != "200"
    os.remove(request_log)
    latencies.sort()
    return {
        "requests": done,
        "rps": done / seconds,
        "p50_us": percentile(latencies, 50),
        "p99_us": percentile(latencies, 99),
        # HTTP 200 alone does not prove success: an error is a trailers-only answer without a
        # message, so a run whose answers carried no data did not read the person.
        "failed": (done - succeeded) + non_200 + (0 if data and int(data.group(1)) > 0 else done),
    }


def percentile(sorted_values, p):
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def signin_flood(port, body, rate, duration, max_in_flight=512):
    """Open-loop sign-ins: `rate` per second for `duration` seconds whatever the answers, each on
    its own connection. Returns (status, seconds) per sign-in; status 0 is a transport error and
    'skipped' counts sign-ins not sent because `max_in_flight` were already waiting."""
    payload = json.dumps(body).encode()
    request = (f"POST /api/auth/signin HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
               f"connection: close\r\n\r\n").encode() + payload
    results, in_flight, skipped = [], 0, 0

    async def one():
        nonlocal in_flight
        in_flight += 1
        started = time.perf_counter()
        status = 0
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout=30)
            status = int(line.split()[1])
            await asyncio.wait_for(reader.read(), timeout=30)
            writer.close()
        except (OSError, ValueError, IndexError, asyncio.TimeoutError):
            pass
        finally:
            in_flight -= 1
        results.append((status, time.perf_counter() - started))

    tasks, sent, start = [], 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < duration:
        while sent < int(elapsed * rate) + 1:
            sent += 1
            if in_flight >= max_in_flight:
                skipped += 1
            else:
                tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(min(0.005, 1 / rate))
    await asyncio.gather(*tasks)
    return results, skipped


# --- Measurements -------------------------------------------------------------------------------


READ_TARGETS = [
    # (key, row label, processes whose CPU counts)
    ("ours", "ours: gateway → resource-service (HTTP/JSON)", ["gateway", "resource-service"]),
    ("grpc", "resource-service alone (gRPC, h2load)", ["resource-service"]),
    ("express-string", "Express + jsonwebtoken, string secret", ["express-string"]),
    ("express-keyobject", "Express + jsonwebtoken, KeyObject", ["express-keyobject"]),
]


class Meter:
    """CPU seconds of each server process (and PostgreSQL's, when the suite owns the cluster)
    over one measured window."""

    def __init__(self, stack):
        self.pids = stack.pids()
        self.postmaster = stack.pg.postmaster_pid()

    def sample(self):
        cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if self.postmaster:
            # The live backends' CPU, and through the postmaster's cutime/cstime, that of the
            # backends that ended: a pool that closes an idle connection mid-window takes its
            # backend's CPU out of the live sum (it once made PostgreSQL's share negative).
            total = cpu_seconds(self.postmaster, reaped=True)
            for pid in children(self.postmaster):
                try:
                    total += cpu_seconds(pid)
                except OSError:
                    pass
            cpu["postgres"] = total
        return cpu

    @staticmethod
    def per_request_us(before, after, requests):
        return {name: (after[name] - before[name]) / max(requests, 1) * 1e6 for name in after}


def measure_read(key, stack, meter, args, work_dir):
    before = meter.sample()
    if key == "grpc":
        result = run_h2load(stack.ports["resource"], stack.token, args.connections, args.threads,
                            args.duration, work_dir)
    else:
        name = "gateway" if key == "ours" else key
        token = stack.token if key == "ours" else stack.express_token
        result = run_wrk(stack.url(name, f"/api/persons/{PERSON_ID}"), args.connections,
                         args.threads, args.duration, {"WRK_AUTH": token})
        errors = result["errors"]
        result["failed"] = errors["status"] + errors["connect"] + errors["read"] + \
            errors["write"] + errors["timeout"]
    result["cpu_us"] = Meter.per_request_us(before, meter.sample(), result["requests"])
    return result


def measure_closed_loop(meter, url, connections, duration, env):
    """A closed loop of `connections` clients (one wrk thread each, so every answer is timed by
    its status) and the CPU each process spent per answer and per 200."""
    before = meter.sample()
    result = run_wrk(url, connections, connections, duration,
                     {"WRK_TIME_BY_STATUS": "1", **env})
    after = meter.sample()
    seconds = result["duration_us"] / 1e6
    result["ok"] = result["statuses"].get("200", 0)
    result["ok_rps"] = result["ok"] / seconds
    result["refused_rps"] = result["statuses"].get("429", 0) / seconds
    result["cpu_us"] = Meter.per_request_us(before, after, result["requests"])
    result["cpu_us_per_ok"] = Meter.per_request_us(before, after, result["ok"])
    # Successful answers per second of auth-service's CPU time: per core it keeps busy.
    auth_cpu = after["auth-service"] - before["auth-service"]
    result["ok_per_auth_core"] = result["ok"] / auth_cpu if auth_cpu > 0 else 0.0
    # wrk's "status" errors are the answers other than 2xx/3xx, already among the statuses.
    result["transport_errors"] = {k: v for k, v in result["errors"].items()
                                  if k != "status" and v}
    result["failed"] = result["requests"] - result["ok"] + sum(result["transport_errors"].values())
    result["connections"] = connections
    return result


def measure_signin(stack, meter, connections, duration):
    """Sign-ins of one account through the gateway from `connections` clients in a closed loop:
    at most workers + a few, so none is refused, it measures what argon2 can serve; at 32 it is
    the flood of refusals a 429 invites."""
    return measure_closed_loop(meter, stack.url("gateway", "/api/auth/signin"), connections,
                               duration, {"WRK_METHOD": "POST",
                                          "WRK_BODY": json.dumps(stack.signer)})


def measure_refresh(stack, meter, refresh_tokens, duration, work_dir):
    """Refreshes through the gateway, one session chain per connection (each refresh spends the
    token the previous one returned, never a spent one)."""
    path = os.path.join(work_dir, "refresh-tokens.txt")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("\n".join(refresh_tokens) + "\n")
    try:
        return measure_closed_loop(meter, stack.url("gateway", "/api/auth/refresh"),
                                   len(refresh_tokens), duration,
                                   {"WRK_REFRESH_TOKENS": path})
    finally:
        os.remove(path)


def measure_client_credentials(stack, meter, client, connections, duration):
    """Client-credentials grants at /oauth/token with the service account's id and secret in
    HTTP Basic, as an OAuth client library sends them."""
    return measure_closed_loop(meter, stack.url("gateway", "/oauth/token"), connections, duration,
                               {"WRK_METHOD": "POST", "WRK_BODY": "grant_type=client_credentials",
                                "WRK_CONTENT_TYPE": "application/x-www-form-urlencoded",
                                "WRK_AUTHORIZATION": client.basic_authorization()})


def start_probe(stack, args):
    """bench/probe.py timing JWKS, refresh and introspection through the gateway, paced."""
    access, refresh = stack.probe_tokens
    argv = [sys.executable, os.path.join(BENCH, "probe.py"), "--port", str(stack.ports["gateway"]),
            # `=`: a token may begin with "-", which argparse would take for an option.
            f"--access-token={access}", f"--refresh-token={refresh}",
            "--duration", str(args.storm_duration),
            "--interval-ms", str(args.storm_probe_interval_ms)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_probe(stack, probe, timeout):
    """The probe's results, with the last refresh token it holds kept for the next probe."""
    try:
        stdout, stderr = probe.communicate(timeout=timeout)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    if probe.returncode != 0:
        raise BenchError(f"the probe failed ({probe.returncode}):\n{stdout}{stderr}")
    results = json.loads(stdout)
    stack.probe_tokens = (stack.probe_tokens[0], results.pop("refresh_token"))
    for result in results.values():
        values = sorted(result["latencies_us"])
        result["requests"] = len(values)
        result["p50_us"] = percentile(values, 50)
        result["p99_us"] = percentile(values, 99)
    return results


# Seconds between a storm and the next quiet window: accepted sign-ins wait about a second.
STORM_SETTLE_S = 3


def measure_storm(stack, args, signin_rps):
    """Paced reads through the gateway and paced calls of auth-service's JWKS, refresh and
    introspection alone, then the same during a sign-in flood at twice the measured sign-in
    throughput: `args.storm_pairs` such pairs of windows one after the other, so that each
    storm is compared with the quiet window just before it rather than with one minutes away
    (the machine's speed drifts). After each storm the queued sign-ins get `STORM_SETTLE_S` to
    finish before the next quiet window starts."""
    reads_env = {"WRK_AUTH": stack.token, "WRK_DELAY_MS": str(args.storm_read_delay_ms)}
    url = stack.url("gateway", f"/api/persons/{PERSON_ID}")
    rate = args.storm_rate or max(args.storm_factor * signin_rps, args.storm_min_rate)
    pairs, flood, skipped = [], [], 0
    for n in range(args.storm_pairs):
        if n:
            time.sleep(STORM_SETTLE_S)
        probe = start_probe(stack, args)
        idle = run_wrk(url, args.storm_read_connections, 1, args.storm_duration, reads_env)
        idle_calls = finish_probe(stack, probe, args.storm_duration + 60)
        reads = start_wrk(url, args.storm_read_connections, 1, args.storm_duration, reads_env)
        probe = start_probe(stack, args)
        try:
            sent, not_sent = asyncio.run(
                signin_flood(stack.ports["gateway"], stack.signer, rate, args.storm_duration))
            stdout, stderr = reads.communicate(timeout=args.storm_duration + 60)
            storm_calls = finish_probe(stack, probe, args.storm_duration + 60)
        finally:
            for proc in [reads, probe]:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        storm = parse_wrk(subprocess.CompletedProcess(reads.args, reads.returncode, stdout, stderr))
        flood += sent
        skipped += not_sent
        pairs.append({"idle": idle, "storm": storm,
                      "calls": {"idle": idle_calls, "storm": storm_calls}})
    by_status = {}
    for status, seconds in flood:
        by_status.setdefault(status, []).append(seconds * 1e6)
    for values in by_status.values():
        values.sort()
    return {"pairs": pairs, "rate": rate, "sent": len(flood), "skipped": skipped,
            "by_status": by_status}
