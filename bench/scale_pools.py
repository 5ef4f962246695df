"""Issue 22's address targets: a /16 pool with 50,000 addresses taken, beside the raw driver.

The taken addresses are stored straight into the database (address documents with an owner and
their claims, as an import around the API would leave them), then the pool is defined through the
API, which counts its claims once (core/counts.py). One allocation before the samples builds the
pool's hint, as the first allocation after a start does. Each sample allocates one address more.
"""

import datetime
import ipaddress
import statistics
import time
import uuid

import requests
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from resource_manager.core.ipranges import ipkey, key_bounds

ADMIN = ("admin", "bench-admin-pw")
OPERATOR = ("operator", "bench-operator-pw")
CIDR = "10.80.0.0/16"
TAKEN = 50_000
NAME = "bench16"


def seed(db, taken=TAKEN, cidr=CIDR):
    """Store `taken` owned addresses of `cidr` (from .2 up) with their claims, straight into `db`."""
    network = ipaddress.ip_network(cidr)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    for start in range(0, taken, 1000):
        docs, claims = [], []
        for i in range(start, min(start + 1000, taken)):
            address = str(network[i + 2])
            doc = {"_id": ObjectId(), "address": address, "owner": "seed", "tags": {}, "_created": now,
                   "_updated": now, "_etag": uuid.uuid4().hex}
            docs.append(doc)
            claims.append({"_id": f"private/{address}", "kind": "private", "ipkey": ipkey(address),
                           "holder": "adopted", "doc": doc["_id"], "at": now})
        db.private_addresses.insert_many(docs, ordered=False)
        db.address_claims.insert_many(claims, ordered=False)


def _ms(start):
    return (time.perf_counter() - start) * 1000


def measure(url, db, samples, floor_samples):
    """Return {"alloc": (ours, floor, notes), "pool": (ours, floor, notes)} in ms, medians."""
    network = ipaddress.ip_network(CIDR)
    with requests.Session() as admin:
        admin.auth = ADMIN
        start = time.perf_counter()
        created = admin.post(f"{url}/address-pools", json={"name": NAME, "cidr": CIDR, "kind": "private"},
                             timeout=600)
        assert created.status_code == 201, created.text
        created_ms = _ms(start)
        assert created.json()["utilisation"]["allocated"] == TAKEN, created.json()
    session = requests.Session()
    session.auth = OPERATOR

    def allocate(i):
        response = session.post(f"{url}/address-pools/{NAME}/allocate", json={"owner": f"bench{i}"}, timeout=120)
        assert response.status_code == 201, response.text

    start = time.perf_counter()
    allocate(-1)  # builds the pool's hint from the claims, as the first allocation after a start does
    first_ms = _ms(start)
    next_free = [TAKEN + 2]

    def raw_allocate(i):
        # The least a correct allocation needs: a claim insert that decides, and the address document
        # (public ones, outside the pool, so that the pool's kept count stays its own).
        while True:
            address = str(network[next_free[0]])
            next_free[0] += 1
            try:
                db.address_claims.insert_one({"_id": f"public/{address}", "kind": "public", "ipkey": ipkey(address),
                                              "holder": "raw", "at": datetime.datetime.now(datetime.timezone.utc)})
            except DuplicateKeyError:
                continue
            db.public_addresses.insert_one({"address": address, "owner": f"raw{i}", "tags": {}})
            return

    ours, floor = [], []
    for i in range(samples):
        start = time.perf_counter()
        allocate(i)
        ours.append(_ms(start))
        start = time.perf_counter()
        raw_allocate(i)
        floor.append(_ms(start))
    low, high = key_bounds(network)
    gets, counts = [], []
    for i in range(max(samples, floor_samples)):
        start = time.perf_counter()
        response = session.get(f"{url}/address-pools/{NAME}", timeout=120)
        assert response.status_code == 200, response.text
        gets.append(_ms(start))
        if i < floor_samples:  # what a pool's utilisation needs without a kept count: its claims, counted
            start = time.perf_counter()
            assert db.address_pools.find_one({"name": NAME}) is not None
            db.address_claims.count_documents({"kind": "private", "ipkey": {"$gte": low, "$lte": high}})
            counts.append(_ms(start))
    allocated = response.json()["utilisation"]["allocated"]
    session.close()
    return {
        "alloc": (statistics.median(ours), statistics.median(floor),
                  f"{TAKEN:,} taken; raw: claim insert + address insert; the first allocation (builds the "
                  f"hint) {first_ms:,.0f} ms; defining the pool (counts its claims once) {created_ms:,.0f} ms"),
        "pool": (statistics.median(gets), statistics.median(counts),
                 f"utilisation kept (counts.py); raw: find_one + count of the pool's claims; "
                 f"allocated {allocated:,} at the end"),
    }
