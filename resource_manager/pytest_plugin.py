"""pytest plugin: machines from ResourceManager for a test session, as the fixture `rm_machines`.

Registered by the `pytest11` entry point `resource_manager` (off with `-p no:resource_manager`).
It adds options and one fixture, nothing else: a session whose tests use no `rm_machines`
reserves nothing and sends no request.

    def test_boots(rm_machines):
        for host in rm_machines["hostnames"]: ...        # rm_machines["machines"]: the documents

    pytest --rm-count 2 --rm-where '{"tags.arch": "aarch64"}' --rm-wait 30m --rm-job-id "$BUILD_TAG"

The machines are reserved when the first test that asks for them runs, held with heartbeats
(clientlib/holding.py), and released when the session ends: passed, failed or interrupted (Ctrl-C).
Killed outright, the heartbeats stop and the server frees them within --rm-heartbeat. Endpoint and
credentials come from RM_ENDPOINT, RM_TOKEN (or RM_USERNAME/RM_PASSWORD) and the client config file,
as for rmctl. Under pytest-xdist each worker is a session of its own, and reserves its own machines.
"""

import json

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("resource-manager", "machines from ResourceManager (the rm_machines fixture)")
    group.addoption("--rm-count", type=int, default=1, metavar="N", help="how many machines rm_machines holds (1)")
    group.addoption("--rm-where", metavar="JSON", help="which machines qualify, as JSON")
    group.addoption("--rm-wait", metavar="DURATION", help="wait in line this long when not enough are free (90s, 30m)")
    group.addoption("--rm-job-id", metavar="ID", help="the job the machines are for (e.g. $BUILD_TAG)")
    group.addoption("--rm-lease", metavar="DURATION", help="the longest they are held (the server's default: 4h)")
    group.addoption("--rm-heartbeat", metavar="DURATION", default="60s",
                    help="freed this long after the last heartbeat if the session dies (60s)")
    group.addoption("--rm-reason", metavar="TEXT", help="free text kept in the reservation's history")


def pytest_configure(config):
    # Bad options are a usage error at once, not an error in whichever test first asks for machines.
    options = _options(config)
    if options["count"] < 1:
        raise pytest.UsageError("--rm-count must be at least 1")


def _options(config):
    from .clientlib import durations

    get = config.getoption
    options = {"count": get("rm_count"), "job_id": get("rm_job_id"), "reason": get("rm_reason")}
    where = get("rm_where")
    try:
        options["where"] = json.loads(where) if where else None
    except ValueError as e:
        raise pytest.UsageError(f"--rm-where is not valid JSON: {e}") from None
    if options["where"] is not None and not isinstance(options["where"], dict):
        raise pytest.UsageError("--rm-where must be a JSON object")
    for name in ("wait", "lease", "heartbeat"):
        text = get(f"rm_{name}")
        try:
            options[name] = durations.seconds(text) if text else None
        except ValueError as e:
            raise pytest.UsageError(f"--rm-{name}: {e}") from None
    return options


@pytest.fixture(scope="session")
def rm_machines(request):
    """The machines held for this session: the reservation (`hostnames`...), their documents under "machines"."""
    from .clientlib.client import ResourceManagerClient
    from .clientlib.errors import ResourceManagerError

    options = _options(request.config)
    session = request.session

    def lost(message):
        session.shouldfail = f"rm_machines: {message}"  # no test starts on machines no longer ours

    try:
        client = ResourceManagerClient("machines")
    except ValueError as e:
        pytest.fail(f"rm_machines: {e}", pytrace=False)
    with client:
        hold = client.holding(options["count"], where=options["where"], wait=options["wait"],
                              heartbeat=options["heartbeat"], lease=options["lease"], job_id=options["job_id"],
                              reason=options["reason"], on_lost=lost)
        try:
            machines = hold.__enter__()
        except ResourceManagerError as e:
            why = e.describe() if hasattr(e, "describe") else (e.message or str(e))
            pytest.fail(f"rm_machines: could not reserve {options['count']} machine(s) at {client.base_url}: {why}",
                        pytrace=False)
        try:
            yield machines
        finally:
            hold.__exit__(None, None, None)
