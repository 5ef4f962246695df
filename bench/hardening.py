"""Figures of issue 13's findings, for RELIABILITY.md: `python bench/hardening.py [--root CHECKOUT]`.

Each probe reproduces one finding over real HTTP (the dev server in process; gunicorn as deployed
for slow clients) and prints what happened. --root runs the same probes on another checkout
(e.g. a worktree of the commit before the fixes) to get the "before" figures.
"""

import argparse
import base64
import importlib.util
import ipaddress
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=ROOT, help="the checkout whose code to probe (default: this one)")
    parser.add_argument("--only", help="run only the probes whose name contains this")
    return parser.parse_args()


ARGS = parse_args()
sys.path.insert(0, ARGS.root)
logging.disable(logging.CRITICAL)

import requests  # noqa: E402

try:
    from resource_manager.api import auth
except ImportError:  # --root on a checkout from before the layered layout
    from resource_manager import auth
from resource_manager.localdb import LocalDB  # noqa: E402

try:
    from tests.deployed import Gunicorn
except ImportError:  # --root on a checkout from before test support moved out of bench/
    from bench.deployed import Gunicorn
from tests.support import ADMIN, OPERATOR, PASSWORDS, LiveServer, write_users_file  # noqa: E402

try:
    from tests.support import run_together
except ImportError:  # --root on a checkout older than the helper: this checkout's, on that code
    _spec = importlib.util.spec_from_file_location("_support_here", os.path.join(ROOT, "tests", "support.py"))
    _here = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_here)
    run_together = _here.run_together

TMP = tempfile.mkdtemp(prefix="rm-hardening-")
PROBES = []


def probe(fn):
    PROBES.append(fn)
    return fn


def server(db, **overrides):
    users = write_users_file(os.path.join(TMP, f"users-{uuid.uuid4().hex[:6]}.json"))
    settings = {"MONGO_URI": db.uri, "MONGO_DBNAME": f"h_{uuid.uuid4().hex[:8]}", "USERS_FILE": users,
                "SECRET_KEY": "bench-secret"}
    settings.update(overrides)
    return LiveServer(settings), users


def post(live, auth_pair, hostname="h1", session=None):
    s = session or requests.Session()
    return s.post(live.url + "/machines", json={"hostname": hostname, "state": "idle"}, auth=auth_pair, timeout=60)


@probe
def rotation(db):
    live, users = server(db)
    real = auth.check_password_hash
    state = {"done": False}

    def rotate_during_check(pwhash, password):
        ok = real(pwhash, password)
        if not state["done"] and password == PASSWORDS["operator"]:
            state["done"] = True
            auth.set_user(users, "operator", "rotated-pw-1", "operator")
            post(live, ("operator", "rotated-pw-1"), "during")
        return ok

    auth.check_password_hash = rotate_during_check
    try:
        post(live, OPERATOR, "in-flight")
        late = [post(live, OPERATOR, f"late-{i}").status_code for i in range(20)]
    finally:
        auth.check_password_hash = real
        live.stop()
    return f"old password after the rotation was read: {late.count(201)} of 20 requests accepted"


@probe
def burst_of_guesses(db):
    out = []
    for count in (24, 64):
        live, _ = server(db)
        try:
            codes = run_together(count, lambda i, live=live: post(live, ("operator", f"guess-{i}")).status_code)
        finally:
            live.stop()
        out.append(f"{count} guesses at once: {codes.count(401)} checked (401), {codes.count(429)} refused (429)")
    return "; ".join(out) + " (AUTH_MAX_FAILURES 5)"


@probe
def neighbour_lockout(db):
    live, _ = server(db)
    try:
        known = requests.Session()
        first = post(live, OPERATOR, "m1", known).status_code
        neighbour = [post(live, ("operator", f"guess-{i}")).status_code for i in range(6)]
        after = post(live, OPERATOR, "m2", known).status_code
    finally:
        live.stop()
    return (f"client signed in before ({first}); a neighbour on its address guesses 6 times ({neighbour}); "
            f"the client's right password then gets {after}")


def sign_in(live, next_url=None):
    browser = requests.Session()
    browser.headers["Accept"] = "text/html"
    page = browser.get(live.url + "/ui/login", timeout=30).text
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    data = {"username": "operator", "password": PASSWORDS["operator"], "csrf_token": csrf}
    if next_url:
        data["next"] = next_url
    return browser, browser.post(live.url + "/ui/login", data=data, allow_redirects=False, timeout=30)


@probe
def sessions(db):
    live, _ = server(db)
    try:
        post(live, OPERATOR, "m1")
        browser, _ = sign_in(live)
        stolen = requests.Session()
        stolen.cookies.update(browser.cookies)
        page = stolen.get(live.url + "/ui/machines/m1", headers={"Accept": "text/html"}, timeout=30).text
        csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
        own = browser.get(live.url + "/ui/machines/m1", timeout=30).text.split('name="csrf_token" value="')[1]
        browser.post(live.url + "/ui/logout", data={"csrf_token": own.split('"')[0]}, timeout=30)
        action = stolen.post(live.url + "/ui/machines/m1/state", data={"state": "needs_repair", "csrf_token": csrf},
                             allow_redirects=False, timeout=30).status_code
        state = live.db.machines.find_one({"hostname": "m1"})["state"]
        crlf = sign_in(live, "/ui/\r\nSet-Cookie: a=b")[1].status_code
    finally:
        live.stop()
    return (f"cookie copied before sign-out, used after: {action}, machine now {state}; "
            f"sign-in with next containing CR/LF: {crlf}")


@probe
def malformed_users_file(db):
    live, users = server(db)
    try:
        post(live, OPERATOR, "m0")
        with open(users, "w", encoding="utf-8") as fh:
            fh.write('{"users": [')
        codes = [post(live, OPERATOR, "m1").status_code, post(live, ("operator", "wrong"), "m2").status_code]
        health = requests.get(live.url + "/healthz", timeout=30)
    finally:
        live.stop()
    return f"right password: {codes[0]}, wrong: {codes[1]}; /healthz {health.status_code} {health.text.strip()[:160]}"


def slow_request(url, authorization=None):
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=120)
    lines = ["POST /machines HTTP/1.1", f"Host: {host}", "Content-Type: application/json", "Content-Length: 100000"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b'{"hostname": "')
    return sock


def answered_after(sock, started, limit):
    """Seconds from `started` until the answer's status line arrives on `sock`, or None within `limit`."""
    sock.settimeout(max(0.1, started + limit - time.perf_counter()))
    try:
        data = sock.recv(64)
    except OSError:
        return None
    return time.perf_counter() - started if data else None


@probe
def slow_clients(db):
    dbname = f"h_slow_{uuid.uuid4().hex[:6]}"
    users = write_users_file(os.path.join(TMP, "users-slow.json"))
    basic = "Basic " + base64.b64encode(f"{OPERATOR[0]}:{OPERATOR[1]}".encode()).decode()
    out = []
    limit = 45
    for label, authorization in (("anonymous", None), ("authenticated", basic)):
        app = Gunicorn(db.uri, dbname, users, os.path.join(TMP, "gunicorn.log"), workers=2, threads=2)
        with app:
            slow = [slow_request(app.url, authorization) for _ in range(4)]
            started = time.perf_counter()
            held = [None] * len(slow)

            def wait(i, slow=slow, started=started, held=held):
                held[i] = answered_after(slow[i], started, limit)

            waiters = [threading.Thread(target=wait, args=(i,)) for i in range(len(slow))]
            for t in waiters:
                t.start()
            try:
                code = requests.get(app.url + "/healthz", timeout=limit).status_code
            except requests.RequestException:
                code = "no answer"
            waited = time.perf_counter() - started
            for t in waiters:
                t.join()
            for s in slow:
                s.close()
        shown = ", ".join("never" if h is None else f"{h:.1f} s" for h in held)
        out.append(f"4 slow {label} bodies (all 4 threads of 2 workers × 2): answered after {shown} "
                   f"(waited {limit} s at most); /healthz {code} after {waited:.2f} s")
    return "; ".join(out)


@probe
def pool_exclusions(db):
    live, _ = server(db)
    out = []
    try:
        admin = live.session(ADMIN)
        for name, cidr, n in (("long", "10.0.0.0/8", 200_000), ("cap", "10.200.0.0/16", 1024)):
            network = ipaddress.ip_network(cidr)
            # Every other address: nothing merges.
            exclude = [str(network[2 + 2 * i]) for i in range(n)]
            created = admin.post("/address-pools", json={"name": name, "cidr": cidr, "kind": "private",
                                                         "exclude": exclude})
            if created.status_code != 201:
                out.append(f"{len(exclude)} exclusions: {created.status_code} "
                           f"({created.json()['_error']['message'][:80]})")
                continue
            cpu, size = [], 0
            for _ in range(5):
                before = time.process_time()
                response = requests.get(live.url + f"/address-pools/{name}", timeout=60)
                cpu.append(time.process_time() - before)
                size = len(response.content)
            out.append(f"{len(exclude)} exclusions: created; GET /address-pools/{name}: "
                       f"{statistics.median(cpu) * 1000:.1f} ms CPU, {size:,} bytes")
            admin.delete(f"/address-pools/{name}")
    finally:
        live.stop()
    return "; ".join(out)


@probe
def names(db):
    live, _ = server(db)
    try:
        op = live.session(OPERATOR)
        codes = [op.post("/machines", json={"hostname": h, "state": "idle"}).status_code
                 for h in ("H.example.com", "h.example.com", "h.example.com.")]
        count = live.db.machines.count_documents({})
        victim = op.post("/machines", json={"hostname": "victim", "state": "idle"}).json()
        op.post("/machines", json={"hostname": victim["_id"], "state": "idle"})
        hex_name = "5f1e9a3b2c4d6e8f0a1b2c3d"
        op.post("/machines", json={"hostname": hex_name, "state": "idle"})
        by_hex = op.get(f"/machines/{hex_name}").status_code
        clash = op.get(f"/machines/{victim['_id']}")
        reached = clash.json().get("hostname") if clash.status_code == 200 else None
    finally:
        live.stop()
    return (f"H.example.com, h.example.com, h.example.com.: {codes}, {count} machines stored; "
            f"GET by a 24-hex hostname: {by_hex}; GET /machines/<victim _id> while another machine is named "
            f"so: {clash.status_code}" + (f" (reached '{reached}')" if reached else ""))


@probe
def zone_ids(db):
    live, _ = server(db)
    try:
        op = live.session(OPERATOR)
        codes = [op.post("/public-addresses", json={"address": a, "owner": o}).status_code
                 for a, o in (("fe80::1", "first"), ("fe80::1%eth0", "second"))]
        stored = sorted(d["address"] for d in live.db.public_addresses.find())
    finally:
        live.stop()
    return f"fe80::1 then fe80::1%eth0: {codes}; stored {stored}"


def probe_500s(live):
    op, anon, admin = live.session(OPERATOR), live.session(), live.session(ADMIN)
    op.post("/machines", json={"hostname": "seed-1", "state": "idle"})
    big = 10**20
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    return [
        op.post("/machines", json={"hostname": "h-big", "state": "idle", "tags": {"n": big}}),
        anon.get("/machines", params={"where": json.dumps({"tags.n": big})}),
        anon.get("/machines", params={"where": "tags.n == 100000000000000000000000"}),
        anon.get("/machines", params={"where": json.dumps({"tags.l": {"$size": big}})}),
        op.post("/reservations", json={"where": {"tags.n": big}}),
        op.post("/reservations?dry_run=1", json={"where": {"tags.n": big}}),
        anon.get("/machines", params={"where": json.dumps({"a\u0000b": 1})}),
        op.post("/reservations?dry_run=1", json={"where": {"tags.a\u0000b": 1}}),
        op.post("/reservations", json={"where": deep}),
        anon.get("/ui/", params={"page": str(10**18)}),
        anon.get("/ui/", params={"tag": "memory=" + "9" * 30}),
        admin.post("/address-pools", json={"name": "x\n", "cidr": "10.9.0.0/24", "kind": "private"}),
        op.post("/machines", json={"hostname": "h-arr", "state": "idle", "tags": {"a": [[1]]}}),
        op.post("/reservations?dry_run=1", json={"where": json.dumps({"tags.n": big})}),
    ]


@probe
def inputs_that_answered_500(db):
    live, _ = server(db)
    try:
        codes = [r.status_code for r in probe_500s(live)]
    finally:
        live.stop()
    return f"{codes.count(500)} of {len(codes)} answered 500; statuses {codes}"


@probe
def broader_corpus(db):
    live, _ = server(db)
    try:
        op, admin, anon = live.session(OPERATOR), live.session(ADMIN), live.session()
        op.post("/machines", json={"hostname": "seed-1", "state": "idle"})
        admin.post("/address-pools", json={"name": "p", "cidr": "10.9.0.0/24", "kind": "private"})
        codes = [
            admin.post("/reservations/sweep?grace=" + "9" * 30).status_code,
            op.post("/address-pools/p/allocate", json={"tags": {"$set": 1}}).status_code,
            op.post("/address-pools/p/allocate", json={"tags": {"a.b": 1}}).status_code,
            op.post("/address-pools/p/allocate", json={"tags": {"a": [[1]]}}).status_code,
            anon.get("/machines/seed-1", params={"version": "all"}).status_code,
        ]
    finally:
        live.stop()
    return f"sweep ?grace=10^30, allocation tags with $-key, dotted key, array in array, ?version=all: {codes}"


@probe
def nan_in_where(db):
    live, _ = server(db)
    try:
        op = live.session(OPERATOR)
        codes = [op.post("/reservations?dry_run=1", json={"where": w}).status_code
                 for w in ('{"tags.n": NaN}', '{"tags.n": Infinity}', '{"tags.n": 1e999}')]
        ui = requests.get(live.url + "/ui/", params={"tag": "memory=NaN"}, timeout=30).status_code
    finally:
        live.stop()
    return f"reservation where NaN / Infinity / 1e999 as JSON text: {codes}; dashboard ?tag=memory=NaN: {ui}"


@probe
def head(db):
    live, _ = server(db)
    try:
        live.session(OPERATOR).post("/machines", json={"hostname": "seed-1", "state": "idle"})
        codes = {path: requests.head(live.url + path, timeout=30).status_code
                 for path in ("/machines", "/machines/seed-1")}
    finally:
        live.stop()
    return f"HEAD (GET answers 200): {codes}"


def main():
    db = LocalDB(os.path.join(TMP, "db"))
    db.start()
    try:
        for fn in PROBES:
            if ARGS.only and ARGS.only not in fn.__name__:
                continue
            print(f"{fn.__name__}: {fn(db)}", flush=True)
    finally:
        db.stop()


if __name__ == "__main__":
    main()
