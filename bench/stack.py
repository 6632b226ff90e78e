"""The processes scripts/bench measures: tools and builds, PostgreSQL, our three services and the
two Express servers on free loopback ports, each stopped when the suite ends."""

import base64
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
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


def http(method, url, body=None, token=None, timeout=30, raw=None, headers=None):
    """(status, parsed JSON or text) of one request: `body` sent as JSON, or `raw` bytes with
    the `headers` given."""
    data = json.dumps(body).encode() if body is not None else raw
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
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


def rss_kib(pid, field="VmRSS"):
    """Resident memory of one process now (VmRSS) or at its peak (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


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
    release = ["--release"] if profile == "release" else []
    log(f"cargo build ({profile})")
    subprocess.run(["cargo", "build", "--quiet", *bins, *release], check=True, cwd=ROOT)
    build_floor(release)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, profile)


def build_floor(release):
    """The crypto floor (token/examples/floor.rs). Built with `--workspace`, not `-p token`: the
    features of its dependencies are then those `cargo test` unified, so after scripts/test's
    build it only links, where `-p token` rebuilt tokio, jsonwebtoken and the rest (a minute of a
    cold CI run)."""
    subprocess.run(["cargo", "build", "--quiet", "--workspace", "--example", "floor", *release],
                   check=True, cwd=ROOT)


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
        self.signer = None
        self.probe_tokens = None
        self.auth_env = {}
        # Each service's async worker threads (*_WORKER_THREADS); None: the runtime's default.
        self.worker_threads = None
        self.admin = None
        # Each service's VmRSS in KiB once it is ready, before the first sign-up or sign-in.
        self.rss_at_start = {}

    def start(self):
        auth_db = self.pg.create_database("bench_auth")
        resource_db = self.pg.create_database("bench_resource")
        for name in ["auth", "resource", "gateway", "express-string", "express-keyobject"]:
            self.ports[name] = free_port()
        auth_url = f"http://127.0.0.1:{self.ports['auth']}"
        resource_url = f"http://127.0.0.1:{self.ports['resource']}"
        logs = {"LOG_FORMAT": "json", "RUST_LOG": "info"}

        def workers(prefix):
            if self.worker_threads is None:
                return {}
            return {f"{prefix}_WORKER_THREADS": str(self.worker_threads)}
        self.admin = {"username": "admin", "password": secrets.token_urlsafe(18)}
        # As deploy/ runs them: the gateway proves its forwarded client addresses with it.
        forwarding = secrets.token_urlsafe(33)

        log("starting auth-service, resource-service and the gateway")
        self.procs.spawn("auth-service", [os.path.join(self.bin_dir, "auth-service")], {
            **logs,
            **workers("AUTH"),
            "AUTH_GRPC_ADDR": f"127.0.0.1:{self.ports['auth']}",
            "AUTH_DATABASE_URL": auth_db,
            "AUTH_BOOTSTRAP_ADMIN_USERNAME": self.admin["username"],
            "AUTH_BOOTSTRAP_ADMIN_PASSWORD": self.admin["password"],
            # On PostgreSQL the signing key must be sealed; a fresh key for a fresh database.
            "AUTH_KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            # Long enough that no token expires during a full run.
            "AUTH_ACCESS_TOKEN_TTL": "1h",
            "AUTH_FORWARDING_SECRET": forwarding,
            # What --auth-env asks for, to compare settings.
            **self.auth_env,
        })
        wait_until("auth-service", lambda: port_open(self.ports["auth"]), self.procs,
                   ["auth-service"])
        self.procs.spawn("resource-service", [os.path.join(self.bin_dir, "resource-service")], {
            **logs,
            **workers("RESOURCE"),
            "RESOURCE_GRPC_ADDR": f"127.0.0.1:{self.ports['resource']}",
            "RESOURCE_DATABASE_URL": resource_db,
            "RESOURCE_AUTH_URL": auth_url,
            "RESOURCE_SAMPLE_DATA": "true",
            "RESOURCE_FORWARDING_SECRET": forwarding,
        })
        wait_until("resource-service", lambda: port_open(self.ports["resource"]), self.procs,
                   ["auth-service", "resource-service"])
        self.procs.spawn("gateway", [os.path.join(self.bin_dir, "gateway")], {
            **logs,
            **workers("GATEWAY"),
            "GATEWAY_HTTP_ADDR": f"127.0.0.1:{self.ports['gateway']}",
            "GATEWAY_AUTH_URL": auth_url,
            "GATEWAY_RESOURCE_URL": resource_url,
            "GATEWAY_FORWARDING_SECRET": forwarding,
        })
        wait_until("the gateway with both backends",
                   lambda: http("GET", self.url("gateway", "/readyz"), timeout=2)[0] == 200,
                   self.procs, ["auth-service", "resource-service", "gateway"])

        # Memory before any password hash but the one auth-service makes at start.
        self.rss_at_start = {name: rss_kib(self.procs.procs[name].pid)
                             for name in ["auth-service", "resource-service", "gateway"]}

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
        self.token = self.sign_in(self.user)["accessToken"]
        # The storm's probes refresh a session of their own, so they never touch the readers'.
        body = self.sign_in(self.user)
        self.probe_tokens = (body["accessToken"], body["refreshToken"])
        # Sign-in load signs in as another account: each sign-in starts a session, and past the
        # per-user cap (AUTH_MAX_SESSIONS_PER_USER) the oldest end, which would revoke the
        # readers' token mid-run.
        self.signer = {"username": f"signer{secrets.token_hex(4)}",
                       "password": secrets.token_urlsafe(12)}
        status, body = http("POST", self.url("gateway", "/api/auth/signup"), {
            **self.signer, "email": f"{self.signer['username']}@example.com"})
        if status != 200:
            raise BenchError(f"sign-up answered {status}: {body}")

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

    def auth_log(self):
        """auth-service's log lines so far, parsed (it logs JSON)."""
        with open(os.path.join(self.procs.log_dir, "auth-service.log"), errors="replace") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def hash_workers(self):
        """The hashing workers auth-service runs, from its start-up log line."""
        for entry in self.auth_log():
            if entry.get("message") == "password hashing workers":
                return int(entry["workers"])
        raise BenchError("auth-service's log has no 'password hashing workers' line")

    def refresh_replays(self):
        """Refresh tokens auth-service saw spent twice (a retry within the grace window, or a
        reuse that revoked the session), from its log."""
        return sum(1 for entry in self.auth_log()
                   if "grace window" in str(entry.get("message", "")))

    def sign_in(self, user):
        status, body = http("POST", self.url("gateway", "/api/auth/signin"), user)
        if status != 200 or not isinstance(body, dict) or not (
                body.get("accessToken") and body.get("refreshToken")):
            # A 200's body holds tokens: not printed.
            raise BenchError(f"sign-in answered {status}: "
                             f"{body if status != 200 else 'no access or refresh token'}")
        return body

    def refresh_sessions(self, count, per_user):
        """Refresh tokens of `count` new sessions, at most `per_user` for each of the new
        accounts made for them, so no sign-in ends another's session
        (AUTH_MAX_SESSIONS_PER_USER)."""
        tokens = []
        while len(tokens) < count:
            user = {"username": f"refresher{secrets.token_hex(4)}",
                    "password": secrets.token_urlsafe(12)}
            status, body = http("POST", self.url("gateway", "/api/auth/signup"), {
                **user, "email": f"{user['username']}@example.com"})
            if status != 200:
                raise BenchError(f"sign-up answered {status}: {body}")
            for _ in range(min(per_user, count - len(tokens))):
                tokens.append(self.sign_in(user)["refreshToken"])
        return tokens

    def service_account(self):
        """A new service account with the role `user`, made through the admin API."""
        admin_token = self.sign_in(self.admin)["accessToken"]
        status, body = http("POST", self.url("gateway", "/api/admin/service-accounts"),
                            {"name": f"bench-{secrets.token_hex(4)}", "roles": ["user"]},
                            token=admin_token)
        if status != 201 or not isinstance(body, dict) or "clientSecret" not in body:
            raise BenchError(f"creating a service account answered {status}: "
                             f"{body if status >= 400 else '(the answer holds the secret)'}")
        client = ServiceAccount(body["clientId"], body["clientSecret"])
        status, body = http("POST", self.url("gateway", "/oauth/token"),
                            raw=b"grant_type=client_credentials",
                            headers={"content-type": "application/x-www-form-urlencoded",
                                     "authorization": client.basic_authorization()})
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise BenchError(f"the client-credentials grant answered {status}: {body}")
        return client


class ServiceAccount:
    """An OAuth client: its id and secret (never printed)."""

    def __init__(self, client_id, secret):
        self.client_id = client_id
        self._secret = secret

    def basic_authorization(self):
        """RFC 6749 §2.3.1: id and secret form-encoded, then HTTP Basic."""
        pair = f"{urllib.parse.quote(self.client_id, safe='')}:" \
               f"{urllib.parse.quote(self._secret, safe='')}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def __repr__(self):
        return f"ServiceAccount({self.client_id!r}, secret=…)"


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
