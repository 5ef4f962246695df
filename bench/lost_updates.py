"""Issue 22's table: pairs of PATCHes with one If-Match, one to each of two API servers, at the same moment.

`python -m bench.lost_updates [--root CHECKOUT] [--pairs 50]` prints, per set-up, how many pairs both
answered 200 (so one acknowledged change was lost). The servers are gunicorn (one worker of 8 threads,
as tests/cluster.py) over this checkout's embedded database; --root serves another checkout's code
(a worktree of an older commit) for the "before" figures.
"""

import argparse
import os
import shutil
import sys
import tempfile
import uuid

import pymongo
import requests

from resource_manager.localdb import LocalDB
from tests.deployed import ROOT, Gunicorn
from tests.support import OPERATOR, run_together, write_users_file


def setups(uri, workdir):
    """(name, [per-server (mongo_uri, environment)]) of the issue's rows, and a control of ours."""
    shared = os.path.join(workdir, "locks-shared")
    own = [os.path.join(workdir, f"locks-host{i}") for i in range(2)]
    for path in [shared, *own]:
        os.makedirs(path, exist_ok=True)
    localhost = uri.replace("127.0.0.1", "localhost")
    return [
        ("two servers, one lock directory (one host, as documented)",
         [(uri, {"RM_WRITE_LOCK_DIR": shared})] * 2),
        ("two servers, each its own lock directory (= two hosts)",
         [(uri, {"RM_WRITE_LOCK_DIR": own[0]}), (uri, {"RM_WRITE_LOCK_DIR": own[1]})]),
        ("one host, one server's URI says `127.0.0.1` and the other's `localhost`",
         [(uri, {"RM_WRITE_LOCK_DIR": shared}), (localhost, {"RM_WRITE_LOCK_DIR": shared})]),
        ("serialisation switched off (reference)",
         [(uri, {"RM_WRITE_SERIALISATION": "off"})] * 2),
        ("two hosts, `RM_WRITE_SERIALISATION=host` (a host-wide flock: the old scope, kept for measurements)",
         [(uri, {"RM_WRITE_LOCK_DIR": own[0], "RM_WRITE_SERIALISATION": "host"}),
          (uri, {"RM_WRITE_LOCK_DIR": own[1], "RM_WRITE_SERIALISATION": "host"})]),
    ]


def pairs_lost(urls, pairs):
    """Send `pairs` pairs (each released together by a barrier); return how many both answered 200."""
    session = requests.Session()
    session.auth = OPERATOR
    names = [f"m{i}" for i in range(pairs)]
    created = session.post(urls[0] + "/machines", json=[{"hostname": n, "state": "idle"} for n in names], timeout=60)
    assert created.status_code == 201, created.text
    lost = 0
    for name in names:
        etag = session.get(f"{urls[0]}/machines/{name}", timeout=30).json()["_etag"]
        bodies = [{"owner": "host0"}, {"tags": {"by": "host1"}}]

        def patch(i, name=name, etag=etag, bodies=bodies):
            with requests.Session() as s:
                s.auth = OPERATOR
                return s.patch(f"{urls[i]}/machines/{name}", json=bodies[i], headers={"If-Match": etag},
                               timeout=60).status_code

        codes = run_together(2, patch)
        assert set(codes) <= {200, 412}, codes
        lost += codes == [200, 200]
    return lost


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.lost_updates", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=ROOT, help="the checkout whose code serves (default: this one)")
    parser.add_argument("--pairs", type=int, default=50)
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="rm-lost-updates-")
    localdb = LocalDB(os.path.join(workdir, "db"))
    uri = localdb.start()
    users = write_users_file(os.path.join(workdir, "users.json"))
    client = pymongo.MongoClient(uri)
    rows = []
    try:
        for name, servers in setups(uri, workdir):
            dbname = f"lost_{uuid.uuid4().hex[:8]}"
            started = []
            try:
                for i, (server_uri, env) in enumerate(servers):
                    # Each server also gets RM_POSTGRES_URL, as a host of a deployment would (older code ignores it).
                    env = dict(env, RM_POSTGRES_URL=localdb.postgres_url)
                    started.append(Gunicorn(server_uri, dbname, users, os.path.join(workdir, f"{dbname}-{i}.log"),
                                            workers=1, threads=8, env=env, root=args.root).start())
                writes = {requests.get(s.url + "/healthz", timeout=10).json().get("writes") for s in started}
                lost = pairs_lost([s.url for s in started], args.pairs)
            finally:
                for server in started:
                    server.stop()
                client.drop_database(dbname)
            rows.append((name, lost, "; ".join(sorted(writes))))
            print(f"{name}: {lost} of {args.pairs}", file=sys.stderr, flush=True)
    finally:
        client.close()
        localdb.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("| set-up | pairs where both answered 200 (one acknowledged change lost) | /healthz `writes` |\n"
          "|---|---|---|")
    for name, lost, writes in rows:
        print(f"| {name} | {lost} of {args.pairs} | {writes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
