"""Machine lifecycle timeouts over real HTTP: a machine stuck in pxe becomes pxe_failed at the sweep.

Time is moved by ageing what the database holds (the history's `at`, the machine's `_updated`),
never by sleeping.
"""

import datetime
import json

from .support import run_together

HOUR = datetime.timedelta(hours=1)


def age(server, hostname, delta):
    """Move everything the database knows about when `hostname` changed `delta` into the past."""
    db = server.db
    for entry in db.history.find({"resource": "machines", "name": hostname}):
        db.history.update_one({"_id": entry["_id"]}, {"$set": {"at": entry["at"] - delta}})
    machine = db.machines.find_one({"hostname": hostname})
    db.machines.update_one({"_id": machine["_id"]}, {"$set": {"_updated": machine["_updated"] - delta,
                                                              "_created": machine["_created"] - delta}})


def sweep(session):
    response = session.post("/reservations/sweep")
    assert response.status_code == 200, response.text
    return response.json()


def state(anon, hostname):
    return anon.get(f"/machines/{hostname}").json()["state"]


def test_a_machine_in_pxe_too_long_fails_at_the_sweep_with_its_reason(operator, anon, server):
    assert operator.post("/machines", json=[{"hostname": "stuck", "state": "pxe"},
                                            {"hostname": "fresh", "state": "pxe"},
                                            {"hostname": "spare", "state": "idle"}]).status_code == 201
    age(server, "stuck", 61 * datetime.timedelta(minutes=1))
    age(server, "spare", 2 * HOUR)
    old_etag = anon.get("/machines/stuck").json()["_etag"]
    assert sweep(operator) == {"expired": 0, "repaired": 0, "released": [], "pxe_failed": 1, "leases_given": 0}
    assert [state(anon, h) for h in ("stuck", "fresh", "spare")] == ["pxe_failed", "pxe", "idle"]
    latest = anon.get("/machines/stuck/history").json()["_items"][0]
    assert latest["action"] == "pxe_timeout" and latest["user"] == "operator"
    assert latest["changes"] == {"state": {"before": "pxe", "after": "pxe_failed"}}
    assert latest["reason"].startswith("in pxe since ") and "(61 min), longer than the PXE timeout of 60 min" \
        in latest["reason"]
    # A fresh _etag: whoever read the pxe version gets 412.
    stale = operator.patch("/machines/stuck", json={"state": "idle"}, headers={"If-Match": old_etag})
    assert stale.status_code == 412
    assert sweep(operator)["pxe_failed"] == 0


def test_the_clock_starts_when_the_machine_entered_pxe_not_at_its_last_change(operator, anon, server):
    operator.post("/machines", json=[{"hostname": "tagged", "state": "pxe"}, {"hostname": "reimaged", "state": "idle"}])
    age(server, "tagged", 2 * HOUR)
    age(server, "reimaged", 2 * HOUR)
    # A PATCH of tags while in pxe moves _updated but not the time it entered pxe...
    assert operator.write("PATCH", "/machines/tagged", json={"tags": {"bios": "1.2"}}).status_code == 200
    # ...while a machine that has just entered pxe starts its clock now, however old it is.
    assert operator.write("PATCH", "/machines/reimaged", json={"state": "pxe"}).status_code == 200
    assert sweep(operator)["pxe_failed"] == 1
    assert [state(anon, h) for h in ("tagged", "reimaged")] == ["pxe_failed", "pxe"]
    age(server, "reimaged", 2 * HOUR)
    assert sweep(operator)["pxe_failed"] == 1
    assert state(anon, "reimaged") == "pxe_failed"


def test_without_history_the_last_change_counts(operator, anon, server):
    # Written by a raw driver: no history, so _updated is all there is.
    now = datetime.datetime.now(datetime.timezone.utc)
    for hostname, when in (("raw-old", now - 2 * HOUR), ("raw-new", now)):
        server.db.machines.insert_one({"hostname": hostname, "state": "pxe", "_created": when, "_updated": when,
                                       "_etag": "e-" + hostname})
    assert sweep(operator)["pxe_failed"] == 1
    assert [state(anon, h) for h in ("raw-old", "raw-new")] == ["pxe_failed", "pxe"]


def test_rm_sweep_reads_rm_pxe_timeout(operator, anon, server, localdb, dbname, users_file, monkeypatch, capsys):
    from resource_manager.admin import sweep as rm_sweep

    operator.post("/machines", json={"hostname": "slow", "state": "pxe"})
    age(server, "slow", datetime.timedelta(minutes=20))
    assert sweep(operator)["pxe_failed"] == 0  # the default: 60 minutes
    for name, value in (("MONGO_URI", localdb.uri), ("RM_MONGO_DBNAME", dbname), ("RM_USERS_FILE", users_file),
                        ("RM_PXE_TIMEOUT", "0")):
        monkeypatch.setenv(name, value)
    assert rm_sweep.main([]) == 0  # 0: never
    assert json.loads(capsys.readouterr().out)["pxe_failed"] == 0
    monkeypatch.setenv("RM_PXE_TIMEOUT", "600")
    assert rm_sweep.main([]) == 0
    assert json.loads(capsys.readouterr().out) == {"expired": 0, "repaired": 0, "released": [], "pxe_failed": 1,
                                                   "leases_given": 0}
    latest = anon.get("/machines/slow/history").json()["_items"][0]
    assert latest["user"] == "rm-sweep" and "PXE timeout of 10 min (RM_PXE_TIMEOUT=600 s)" in latest["reason"]


def test_the_sweep_and_a_patch_racing_on_a_stuck_machine_never_both_win(operator, anon, server):
    for round_ in range(6):
        hostname = f"race{round_}"
        operator.post("/machines", json={"hostname": hostname, "state": "pxe"})
        age(server, hostname, 2 * HOUR)
        etag = anon.get(f"/machines/{hostname}").json()["_etag"]

        def act(i, hostname=hostname, etag=etag):
            if i == 0:
                return sweep(operator)["pxe_failed"]
            return operator.patch(f"/machines/{hostname}", json={"state": "idle"},
                                  headers={"If-Match": etag}).status_code

        failed, patched = run_together(2, act)
        final = state(anon, hostname)
        assert (failed, patched, final) in ((0, 200, "idle"), (1, 412, "pxe_failed")), (failed, patched, final)
        actions = [i["action"] for i in anon.get(f"/machines/{hostname}/history").json()["_items"]]
        assert actions == (["update", "create"] if patched == 200 else ["pxe_timeout", "create"])
