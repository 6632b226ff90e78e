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
import asyncio
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PERSON_ID = 1
READY_TIMEOUT = 180.0

# Plain HTTP to 127.0.0.1: never through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    """Something the suite needs did not work; the message says what."""


def log(message):
    print(f"== {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- /proc --------------------------------------------------------------------------------------


def cpu_seconds(pid):
    """utime + stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# --- Processes ----------------------------------------------------------------------------------


class Processes:
    """Every process the suite started, stopped (TERM, then KILL) when the suite ends."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.procs = {}

    def spawn(self, name, argv, env, cwd=None):
        path = os.path.join(self.log_dir, f"{name}.log")
        out = open(path, "wb")
        # Only what the service is given, as the end-to-end tests do, so a developer's AUTH_* or
        # RUST_LOG cannot change what is measured.
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
        proc = subprocess.Popen(
            argv,
            env={**base, **env},
            cwd=cwd or self.log_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.procs[name] = proc
        return proc

    def check_running(self, name):
        proc = self.procs[name]
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name, lines=20):
        try:
            with open(os.path.join(self.log_dir, f"{name}.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- HTTP ---------------------------------------------------------------------------------------


def http(method, url, body=None, token=None, timeout=30):
    """(status, parsed JSON or text) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with HTTP.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until(what, check, procs, names, timeout=READY_TIMEOUT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for name in names:
            procs.check_running(name)
        try:
            if check():
                return
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.1)
    raise BenchError(f"{what} not ready within {timeout:.0f}s (last error: {last})")


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- Tools and builds ---------------------------------------------------------------------------


def ensure_tools():
    missing = [pkg for tool, pkg in [("wrk", "wrk"), ("h2load", "nghttp2-client"), ("curl", "curl")]
               if shutil.which(tool) is None]
    if missing:
        if os.geteuid() != 0:
            raise BenchError(f"missing tools; install them: apt-get install {' '.join(missing)}")
        log(f"installing {' '.join(missing)} from Debian")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise BenchError("Node.js and npm are needed for the Express servers")
    express = os.path.join(BENCH, "express")
    if not os.path.isdir(os.path.join(express, "node_modules", "jsonwebtoken")):
        log("installing the Express servers' packages (npm ci)")
        subprocess.run(["npm", "ci", "--prefix", express, "--no-audit", "--no-fund",
                        "--loglevel=error"], check=True)


def build(profile):
    bins = ["--bin", "auth-service", "--bin", "resource-service", "--bin", "gateway"]
    argv = ["cargo", "build", "--quiet", *bins] + (["--release"] if profile == "release" else [])
    log(f"cargo build ({profile})")
    subprocess.run(argv, check=True, cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, profile)


# --- PostgreSQL ---------------------------------------------------------------------------------


class Postgres:
    """A throwaway cluster (stopped and removed at the end) or the one DATABASE_URL names (the
    suite's databases are dropped at the end)."""

    def __init__(self):
        self.cluster_dir = None
        self.url = os.environ.get("DATABASE_URL")
        self.created = []
        self.psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"

    def start(self):
        if self.url:
            return
        port = free_port()
        self.cluster_dir = tempfile.mkdtemp(prefix="pg-bench.")
        log(f"starting a throwaway PostgreSQL cluster on port {port}")
        out = subprocess.run([os.path.join(ROOT, "scripts", "pg-throwaway"), "start",
                              self.cluster_dir, str(port)], check=True, capture_output=True,
                             text=True)
        self.url = out.stdout.strip()

    def postmaster_pid(self):
        """The postmaster's pid when the suite owns the cluster, else None."""
        if not self.cluster_dir:
            return None
        with open(os.path.join(self.cluster_dir, "data", "postmaster.pid")) as f:
            return int(f.readline())

    def create_database(self, prefix):
        name = f"{prefix}_{secrets.token_hex(4)}"
        subprocess.run([self.psql, "-q", "-v", "ON_ERROR_STOP=1", self.url, "-c",
                        f"CREATE DATABASE {name}"], check=True, capture_output=True)
        self.created.append(name)
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))

    def stop(self):
        if self.cluster_dir:
            subprocess.run([os.path.join(ROOT, "scripts", "pg-throwaway"), "stop",
                            self.cluster_dir], check=False)
        elif self.url:
            for name in self.created:
                subprocess.run([self.psql, "-q", self.url, "-c",
                                f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                               check=False, capture_output=True)


# --- The stack ----------------------------------------------------------------------------------


class Stack:
    """Our three services and the two Express servers, each on a free loopback port."""

    def __init__(self, procs, pg, bin_dir):
        self.procs = procs
        self.pg = pg
        self.bin_dir = bin_dir
        self.ports = {}
        self.token = None
        self.express_token = None
        self.user = None

    def start(self):
        auth_db = self.pg.create_database("bench_auth")
        resource_db = self.pg.create_database("bench_resource")
        for name in ["auth", "resource", "gateway", "express-string", "express-keyobject"]:
            self.ports[name] = free_port()
        auth_url = f"http://127.0.0.1:{self.ports['auth']}"
        resource_url = f"http://127.0.0.1:{self.ports['resource']}"
        logs = {"LOG_FORMAT": "json", "RUST_LOG": "info"}

        log("starting auth-service, resource-service and the gateway")
        self.procs.spawn("auth-service", [os.path.join(self.bin_dir, "auth-service")], {
            **logs,
            "AUTH_GRPC_ADDR": f"127.0.0.1:{self.ports['auth']}",
            "AUTH_DATABASE_URL": auth_db,
            "AUTH_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "AUTH_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(18),
            # Long enough that no token expires during a full run.
            "AUTH_ACCESS_TOKEN_TTL": "1h",
        })
        wait_until("auth-service", lambda: port_open(self.ports["auth"]), self.procs,
                   ["auth-service"])
        self.procs.spawn("resource-service", [os.path.join(self.bin_dir, "resource-service")], {
            **logs,
            "RESOURCE_GRPC_ADDR": f"127.0.0.1:{self.ports['resource']}",
            "RESOURCE_DATABASE_URL": resource_db,
            "RESOURCE_AUTH_URL": auth_url,
            "RESOURCE_SAMPLE_DATA": "true",
        })
        wait_until("resource-service", lambda: port_open(self.ports["resource"]), self.procs,
                   ["auth-service", "resource-service"])
        self.procs.spawn("gateway", [os.path.join(self.bin_dir, "gateway")], {
            **logs,
            "GATEWAY_HTTP_ADDR": f"127.0.0.1:{self.ports['gateway']}",
            "GATEWAY_AUTH_URL": auth_url,
            "GATEWAY_RESOURCE_URL": resource_url,
        })
        wait_until("the gateway with both backends",
                   lambda: http("GET", self.url("gateway", "/readyz"), timeout=2)[0] == 200,
                   self.procs, ["auth-service", "resource-service", "gateway"])

        log("starting the Express servers")
        secret = secrets.token_hex(32)
        express = os.path.join(BENCH, "express")
        for mode in ["string", "keyobject"]:
            self.procs.spawn(f"express-{mode}", ["node", "server.js"], {
                "PORT": str(self.ports[f"express-{mode}"]),
                "DATABASE_URL": resource_db,
                "JWT_SECRET": secret,
                "KEY_MODE": mode,
                "NODE_ENV": "production",
            }, cwd=express)
        self.express_token = subprocess.run(["node", "mint.js"], cwd=express, check=True,
                                            env={**os.environ, "JWT_SECRET": secret},
                                            capture_output=True, text=True).stdout.strip()

        log("signing up a user and reading its token")
        self.user = {"username": f"bench{secrets.token_hex(4)}",
                     "password": secrets.token_urlsafe(12)}
        status, body = http("POST", self.url("gateway", "/api/auth/signup"), {
            **self.user, "email": f"{self.user['username']}@example.com"})
        if status != 200:
            raise BenchError(f"sign-up answered {status}: {body}")
        status, body = http("POST", self.url("gateway", "/api/auth/signin"), self.user)
        if status != 200 or not isinstance(body, dict) or "accessToken" not in body:
            raise BenchError(f"sign-in answered {status}: {body}")
        self.token = body["accessToken"]

        # Every read target must serve the row before anything is measured.
        for name, token in [("gateway", self.token), ("express-string", self.express_token),
                            ("express-keyobject", self.express_token)]:
            wait_until(f"{name} reading person {PERSON_ID}",
                       lambda: http("GET", self.url(name, f"/api/persons/{PERSON_ID}"),
                                    token=token, timeout=5)[0] == 200,
                       self.procs, [p for p in self.procs.procs], timeout=60)
        grpc_get_person_ok(self.ports["resource"], self.token)

    def url(self, name, path):
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def pids(self):
        return {name: proc.pid for name, proc in self.procs.procs.items()}


def grpc_frame():
    """One length-prefixed gRPC message: GetPersonRequest { person_id = PERSON_ID }."""
    value, varint = PERSON_ID, bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            varint.append(byte | 0x80)
        else:
            varint.append(byte)
            break
    message = bytes([0x08]) + bytes(varint)  # field 1, wire type varint
    return bytes([0]) + len(message).to_bytes(4, "big") + message


GET_PERSON = "/person.v1.PersonService/GetPerson"


def grpc_get_person_ok(port, token):
    """One GetPerson over HTTP/2 with curl; fails unless the trailers say grpc-status 0."""
    with tempfile.NamedTemporaryFile(suffix=".grpc") as frame:
        frame.write(grpc_frame())
        frame.flush()
        out = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null",
             "--data-binary", f"@{frame.name}", "-H", "content-type: application/grpc",
             "-H", "te: trailers", "-H", f"authorization: Bearer {token}",
             f"http://127.0.0.1:{port}{GET_PERSON}"],
            capture_output=True, text=True, timeout=30, check=False)
    status = re.search(r"^grpc-status:\s*(\d+)", out.stdout, re.M | re.I)
    if out.returncode != 0 or not status or status.group(1) != "0":
        raise BenchError(f"GetPerson straight to resource-service did not answer grpc-status 0:"
                         f"\n{out.stdout}{out.stderr}")


# --- Load generators ----------------------------------------------------------------------------


def run_wrk(url, connections, threads, duration, env=None):
    """wrk's results as bench/wrk/report.lua prints them."""
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
            total = 0.0
            for pid in [self.postmaster, *children(self.postmaster)]:
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


def measure_signin(stack, meter, args):
    before = meter.sample()
    result = run_wrk(stack.url("gateway", "/api/auth/signin"), args.connections, args.threads,
                     args.signin_duration,
                     {"WRK_METHOD": "POST", "WRK_BODY": json.dumps(stack.user),
                      "WRK_COUNT_STATUS": "1"})
    result["cpu_us"] = Meter.per_request_us(before, meter.sample(), result["requests"])
    result["accepted"] = result["statuses"].get("200", 0)
    result["accepted_rps"] = result["accepted"] / (result["duration_us"] / 1e6)
    return result


def measure_storm(stack, args, signin_rps):
    """Paced reads through the gateway alone, then the same reads during a sign-in flood at
    twice the measured sign-in throughput."""
    reads_env = {"WRK_AUTH": stack.token, "WRK_DELAY_MS": str(args.storm_read_delay_ms)}
    url = stack.url("gateway", f"/api/persons/{PERSON_ID}")
    idle = run_wrk(url, args.storm_read_connections, 1, args.storm_duration, reads_env)
    rate = max(args.storm_factor * signin_rps, args.storm_min_rate)
    reads = start_wrk(url, args.storm_read_connections, 1, args.storm_duration, reads_env)
    try:
        flood, skipped = asyncio.run(
            signin_flood(stack.ports["gateway"], stack.user, rate, args.storm_duration))
        stdout, stderr = reads.communicate(timeout=args.storm_duration + 60)
    finally:
        if reads.poll() is None:
            reads.kill()
            reads.wait()
    storm = parse_wrk(subprocess.CompletedProcess(reads.args, reads.returncode, stdout, stderr))
    by_status = {}
    for status, seconds in flood:
        by_status.setdefault(status, []).append(seconds * 1e6)
    for values in by_status.values():
        values.sort()
    return {"idle": idle, "storm": storm, "rate": rate, "sent": len(flood), "skipped": skipped,
            "by_status": by_status}


# --- Report -------------------------------------------------------------------------------------


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
    lines = [
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`scripts/bench{' --smoke' if args.smoke else ''}` ({profile} build): {args.rounds} "
        f"interleaved round(s) of {args.duration} s per target, {args.connections} connections, "
        f"{args.threads} load threads; GET one person by id, one PostgreSQL read per request. "
        f"{os.cpu_count()} CPUs; load average {load_before} before, {load_after} after "
        f"(the load generators share the CPUs with the servers).",
        "",
        "| target | req/s median (range) | p50 | p99 | CPU per request | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, cpu_names in READ_TARGETS:
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

    lines += [
        "",
        "Medians of the per-round req/s ratios:",
        "",
        f"- ours / Express string secret: {ratio('ours', 'express-string')}",
        f"- ours / Express KeyObject: {ratio('ours', 'express-keyobject')}",
        f"- gateway hop (ours / resource-service gRPC alone): {ratio('ours', 'grpc')}",
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
    parser.add_argument("--out", default=None,
                        help="where to write the report (default bench/results.md, "
                             "bench/results-smoke.md with --smoke)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.connections, args.threads = 1, 2, 4, 1
        args.signin_duration, args.storm_duration = 3, 2
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
    profile = "debug" if args.smoke else "release"
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
