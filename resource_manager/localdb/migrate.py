"""Carry data of the former default (FerretDB over SQLite files in DATA_DIR) into the PostgreSQL one.

Runs when the PostgreSQL engine starts on a data directory holding `*.sqlite` files: a second
FerretDB serves those files, every collection is copied with its indexes through pymongo, and the
files are then moved aside into DATA_DIR/sqlite-migrated-<time>/ (kept, never deleted). Moving them
is the last step, so a migration cut short runs again at the next start, over a fresh copy.
"""

import datetime
import glob
import logging
import os

import pymongo

from .ferretdb import LocalDBError, read_ready_line, spawn_ferretdb, sqlite_files, wait_for_ping

log = logging.getLogger(__name__)
BATCH = 1000


def _copy_collection(source, target):
    for index in source.list_indexes():
        if index["name"] == "_id_":
            continue
        options = {key: index[key] for key in ("unique", "sparse", "expireAfterSeconds") if key in index}
        target.create_index(list(index["key"].items()), name=index["name"], **options)
    copied, batch = 0, []
    for document in source.find({}, batch_size=BATCH):
        batch.append(document)
        if len(batch) == BATCH:
            target.insert_many(batch, ordered=True)
            copied, batch = copied + len(batch), []
    if batch:
        target.insert_many(batch, ordered=True)
        copied += len(batch)
    if copied == 0 and source.name not in target.database.list_collection_names():
        target.database.create_collection(source.name)
    return copied


def copy_databases(source_uri, target_uri):
    """Copy every database of `source_uri` into `target_uri`, replacing what the target has of them.

    Returns (databases, collections, documents) copied.
    """
    counts = [0, 0, 0]
    with pymongo.MongoClient(source_uri) as source, pymongo.MongoClient(target_uri) as target:
        for name in source.list_database_names():
            if name in ("admin", "config", "local"):
                continue
            target.drop_database(name)  # what an interrupted migration left
            counts[0] += 1
            for collection in source[name].list_collection_names():
                counts[2] += _copy_collection(source[name][collection], target[name][collection])
                counts[1] += 1
    return tuple(counts)


def migrate_sqlite(binary, data_dir, target_uri, timeout=60):
    """Copy the SQLite databases in `data_dir` into the server at `target_uri`, then move the files aside.

    Raises LocalDBError when the SQLite data cannot be served or copied; the files then stay.
    """
    files = sqlite_files(data_dir)
    log.warning("found %d SQLite database(s) of the former embedded engine in %s: copying them into PostgreSQL",
                len(files), data_dir)
    process = spawn_ferretdb(binary, "127.0.0.1:0", ["-handler", "sqlite", "-data-dir", data_dir],
                             os.path.join(data_dir, "migration.log"))
    try:
        uri = read_ready_line(process, timeout)
        if uri is None:
            raise LocalDBError(f"cannot serve the SQLite data to migrate (see {data_dir}/migration.log)")
        wait_for_ping(uri, process, timeout)
        try:
            databases, collections, documents = copy_databases(uri, target_uri)
        except pymongo.errors.PyMongoError as e:
            raise LocalDBError(f"migrating the SQLite data failed (it stays in {data_dir}): {e}") from e
    finally:
        process.terminate()
        process.wait(30)
        process.stdout.close()
    aside = os.path.join(data_dir, "sqlite-migrated-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(aside)
    for path in glob.glob(os.path.join(glob.escape(data_dir), "*.sqlite*")):
        os.rename(path, os.path.join(aside, os.path.basename(path)))
    log.warning("migrated %d document(s) in %d collection(s) of %d database(s) into PostgreSQL; the SQLite files "
                "are kept in %s (delete them once you are satisfied)", documents, collections, databases, aside)
    return databases, collections, documents
