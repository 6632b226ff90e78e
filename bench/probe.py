#!/usr/bin/env python3
"""Paced probes of auth-service's other calls through the gateway, for the login storm: the JWK
Set (GetJwks), a refresh (Refresh, each spending the refresh token the previous one returned) and
token introspection (ValidateToken), each on its own keep-alive connection in its own thread, one
call every `--interval-ms`. Runs as a process of its own so that the sign-in flood's event loop
cannot delay it. Prints one JSON object: per call, the latencies in µs and the statuses, and the
refresh token it ended with.

    probe.py --port 8080 --access-token A --refresh-token R --duration 10 [--interval-ms 20]
"""

import argparse
import http.client
import json
import threading
import time


def call(conn, method, path, body=None, token=None):
    """(status, parsed JSON or None) of one request on a kept-alive connection."""
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, None


def probe(port, duration, interval, step, out):
    """Calls `step(conn)` (which returns a status) every `interval` seconds for `duration`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, statuses = [], {}
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            status = step(conn)
        except (OSError, http.client.HTTPException):
            status = 0
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        took = time.perf_counter() - started
        latencies.append(round(took * 1e6))
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        time.sleep(max(0.0, interval - took))
    conn.close()
    out["latencies_us"] = latencies
    out["statuses"] = statuses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--access-token", required=True)
    parser.add_argument("--refresh-token", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--interval-ms", type=float, default=20)
    args = parser.parse_args()
    refresh_token = [args.refresh_token]

    def jwks(conn):
        return call(conn, "GET", "/.well-known/jwks.json")[0]

    def refresh(conn):
        status, body = call(conn, "POST", "/api/auth/refresh",
                            {"refreshToken": refresh_token[0]})
        if status == 200 and isinstance(body, dict) and body.get("refreshToken"):
            refresh_token[0] = body["refreshToken"]
        return status

    def validate(conn):
        return call(conn, "POST", "/api/auth/introspect", {"token": args.access_token},
                    token=args.access_token)[0]

    results = {"jwks": {}, "refresh": {}, "validate": {}}
    threads = [threading.Thread(target=probe, args=(args.port, args.duration,
                                                    args.interval_ms / 1000, step, results[name]))
               for name, step in [("jwks", jwks), ("refresh", refresh), ("validate", validate)]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The token to go on with: each refresh spent the one before.
    results["refresh_token"] = refresh_token[0]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
