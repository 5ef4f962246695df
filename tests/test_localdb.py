"""The embedded database: started, answering, stopped, and nothing left behind."""

import os
import socket

import pymongo
import pytest

from resource_manager.localdb import LocalDB, LocalDBError

from .support import free_port


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; /proc says which.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def test_start_serves_on_loopback_and_stop_leaves_no_process(tmp_path):
    db = LocalDB(str(tmp_path / "data"))
    uri = db.start()
    assert uri.startswith("mongodb://127.0.0.1:")
    pid = db.process.pid
    with pymongo.MongoClient(uri) as client:
        client.probe.things.insert_one({"_id": 1})
        assert client.probe.things.count_documents({}) == 1
    db.stop()
    assert not alive(pid)


def test_data_survives_a_restart_on_the_same_port(tmp_path):
    port = free_port()
    with LocalDB(str(tmp_path / "data"), port=port) as db:
        with pymongo.MongoClient(db.uri) as client:
            client.probe.things.insert_one({"_id": "kept"})
    with LocalDB(str(tmp_path / "data"), port=port) as db:
        assert db.port == port
        with pymongo.MongoClient(db.uri) as client:
            assert client.probe.things.find_one({"_id": "kept"}) == {"_id": "kept"}


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        db = LocalDB(str(tmp_path / "data"), port=sock.getsockname()[1])
        with pytest.raises(LocalDBError, match="did not start"):
            db.start(timeout=20)
        assert db.process is None


def test_server_refuses_a_non_loopback_address(tmp_path):
    import subprocess

    from resource_manager.localdb import build

    result = subprocess.run([build(), "-listen", "0.0.0.0:0", "-data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "loopback" in result.stderr
