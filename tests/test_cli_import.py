"""import and export: bulk round trips of a few thousand rows, updates, per-row errors, formats."""

import csv
import io
import json

import pytest

from .cli_helpers import run_cli
from .support import PASSWORDS

ROWS = 2000


@pytest.fixture
def cli(server):
    environ = {"RM_ENDPOINT": server.url, "RM_USERNAME": "operator", "RM_PASSWORD": PASSWORDS["operator"]}

    def run(*argv, **kwargs):
        return run_cli(*argv, environ=environ, **kwargs)

    return run


def write_machines_csv(path, count):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["hostname", "state", "owner", "tags.memory", "tags.rack"])
        for i in range(count):
            writer.writerow([f"m{i:05d}", "idle" if i % 4 else "in_use", "ci" if i % 2 else "", 17179869184,
                             f"r{i % 20}"])


def test_round_trip_of_thousands_of_machines(cli, server, tmp_path):
    source = tmp_path / "machines.csv"
    write_machines_csv(source, ROWS)
    result = cli("import", str(source))
    assert (result.code, result.out) == (0, f"created {ROWS}, updated 0, unchanged 0, failed 0\n"), result.err
    assert server.db.machines.count_documents({}) == ROWS
    stored = server.db.machines.find_one({"hostname": "m00003"})
    assert stored["tags"] == {"memory": 17179869184, "rack": "r3"} and stored["owner"] == "ci"
    assert "owner" not in server.db.machines.find_one({"hostname": "m00002"})  # empty cell: not given

    exported = tmp_path / "export.csv"
    result = cli("export", str(exported))
    assert result.code == 0 and f"exported {ROWS} machines" in result.err
    with open(source, encoding="utf-8") as a, open(exported, encoding="utf-8") as b:
        original = {r["hostname"]: r for r in csv.DictReader(a)}
        back = {r["hostname"]: r for r in csv.DictReader(b)}
    assert back == original

    # Change a few rows and import the export again: only those are updated.
    lines = exported.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace(",in_use,", ",needs_repair,")
    lines[2] = lines[2].replace(",r1", ",r99")
    exported.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("import", str(exported))
    assert result.out == f"created 0, updated 2, unchanged {ROWS - 2}, failed 0\n", result.err
    assert server.db.machines.find_one({"hostname": "m00000"})["state"] == "needs_repair"
    assert server.db.machines.find_one({"hostname": "m00001"})["tags"] == {"memory": 17179869184, "rack": "r99"}


def test_bad_rows_are_reported_one_by_one_and_the_rest_imported(cli, server, tmp_path, operator):
    operator.post("/machines", json={"hostname": "old", "state": "idle"})
    lines = [
        {"hostname": "ok1", "state": "idle"},
        {"hostname": "bad", "state": "broken"},
        {"state": "idle"},
        {"hostname": "ok1", "state": "in_use"},
        {"hostname": "old", "state": "in_use", "owner": "x"},
        {"hostname": "ok2", "state": "idle", "colour": "red"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n"
    path = tmp_path / "rows.jsonl"
    path.write_text(text, encoding="utf-8")
    result = cli("import", str(path))
    assert result.code == 4
    assert result.out == "created 1, updated 1, unchanged 0, failed 5\n"
    assert result.err.splitlines() == [
        "rmctl: line 2 (bad): state: unallowed value broken",
        "rmctl: line 3: no hostname",
        "rmctl: line 4 (ok1): same hostname as line 1",
        "rmctl: line 6 (ok2): colour: unknown field",
        "rmctl: line 7: not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ]
    assert sorted(d["hostname"] for d in server.db.machines.find()) == ["ok1", "old"]
    assert server.db.machines.find_one({"hostname": "old"})["owner"] == "x"


def test_addresses_from_stdin_as_a_json_array_match_by_canonical_address(cli, server, operator):
    operator.post("/public-addresses", json={"address": "2001:db8::1", "owner": "a"})
    rows = [{"address": "2001:0db8:0:0::1", "owner": "b"}, {"address": "203.0.113.9"}]
    result = cli("import", "-", "-r", "public-addresses", stdin=json.dumps(rows))
    assert result.out == "created 1, updated 1, unchanged 0, failed 0\n", result.err
    assert {d["address"]: d.get("owner") for d in server.db.public_addresses.find()} == {
        "2001:db8::1": "b", "203.0.113.9": None}


def test_progress_bar_only_on_a_terminal(cli, tmp_path):
    source = tmp_path / "m.csv"
    write_machines_csv(source, 30)
    quiet = cli("import", str(source), "--chunk-size", "10")
    assert quiet.err == ""
    source.write_text(source.read_text().replace("r1\n", "r2\n"))
    shown = cli("import", str(source), "--chunk-size", "10", tty=True)
    assert "importing machines [" in shown.err and "/2" in shown.err


def test_export_formats_and_where(cli, operator):
    operator.post("/machines", json=[{"hostname": "a", "state": "idle", "tags": {"gpu": True}},
                                     {"hostname": "b", "state": "in_use"}])
    as_json = json.loads(cli("export", "--format", "json", "--where", '{"state": "idle"}').out)
    assert as_json == [{"hostname": "a", "state": "idle", "tags": {"gpu": True}}]
    lines = cli("export", "--format", "jsonl").out.splitlines()
    assert sorted(json.loads(line)["hostname"] for line in lines) == ["a", "b"]
    rows = list(csv.DictReader(io.StringIO(cli("export", "--format", "csv").out)))
    assert {r["hostname"]: r["tags.gpu"] for r in rows} == {"a": "true", "b": ""}


def test_import_errors_exit_2(cli, tmp_path):
    result = cli("import", str(tmp_path / "missing.csv"))
    assert result.code == 2 and "cannot read" in result.err
    result = cli("import", "-", "--chunk-size", "0")
    assert result.code == 2


# Values that a CSV round trip changed: text that looks like a number, a boolean, null or JSON, empty
# text, an empty or null owner, and text a spreadsheet runs as a formula (OWASP's CSV injection).
TRICKY = [
    {"hostname": "t1", "state": "idle", "owner": "", "job_id": None,
     "tags": {"a": "42", "b": "true", "c": "null", "d": "1.10", "e": "1e3", "f": "", "g": 42, "h": True, "i": None,
              "j": 1.1, "k": [1, "2"], "l": {"x": "y"}, "m": "[1]", "n": " 7", "o": "-5", "p": -5}},
    {"hostname": "t2", "state": "idle", "owner": "null", "job_id": "42",
     "tags": {"a": "=HYPERLINK(\"http://evil\",\"x\")", "b": "+1+1", "c": "-1+1", "d": "@SUM(A1)", "e": "\tx",
              "f": "\rx", "g": "'quoted", "h": "''", "i": "'=x", "j": "multi\nline, \"quoted\""}},
    {"hostname": "t3", "state": "needs_repair", "owner": "=cmd|' /C calc'!A0", "job_id": "-1"},
    {"hostname": "t4", "state": "idle"},
]


def _stored(db):
    return {d["hostname"]: {k: v for k, v in d.items() if not k.startswith("_")} for d in db.machines.find()}


def test_a_csv_export_imports_back_exactly(cli, server, tmp_path, operator):
    assert operator.post("/machines", json=TRICKY).status_code == 201
    before = _stored(server.db)
    exported = tmp_path / "x.csv"
    assert cli("export", str(exported)).code == 0
    text = exported.read_text(encoding="utf-8")
    # Nothing a spreadsheet would run: every cell starting with =, +, -, @, tab or CR is text ('...),
    # except a plain negative number.
    for row in csv.reader(io.StringIO(text, newline="")):
        for cell in row:
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
            assert not cell.startswith("-") or cell == "-5", cell
    assert "'=HYPERLINK" in text and "'=cmd|" in text
    server.db.machines.delete_many({})
    result = cli("import", str(exported))
    assert (result.code, result.out) == (0, "created 4, updated 0, unchanged 0, failed 0\n"), result.err
    assert _stored(server.db) == before
    # Imported again onto itself: nothing differs.
    assert cli("import", str(exported)).out == "created 0, updated 0, unchanged 4, failed 0\n"
    # JSON round-trips exactly too (it always did): the same documents either way.
    as_json = tmp_path / "x.json"
    assert cli("export", str(as_json)).code == 0
    server.db.machines.delete_many({})
    assert cli("import", str(as_json)).out == "created 4, updated 0, unchanged 0, failed 0\n"
    assert _stored(server.db) == before


def test_a_hand_written_csv_reads_as_before(cli, server, tmp_path):
    # Empty cells are left out, tag cells that look like numbers or booleans are those, the rest is text.
    source = tmp_path / "hand.csv"
    source.write_text("hostname,state,owner,job_id,tags.memory,tags.ssd,tags.rack,tags.note\n"
                      "h1,idle,ci,1234,16,true,r4,fast disk\n"
                      "h2,idle,,,,,,\n", encoding="utf-8")
    result = cli("import", str(source))
    assert result.out == "created 2, updated 0, unchanged 0, failed 0\n", result.err
    stored = _stored(server.db)
    assert stored["h1"] == {"hostname": "h1", "state": "idle", "owner": "ci", "job_id": "1234",
                            "tags": {"memory": 16, "ssd": True, "rack": "r4", "note": "fast disk"}}
    assert stored["h2"] == {"hostname": "h2", "state": "idle", "tags": {}}
