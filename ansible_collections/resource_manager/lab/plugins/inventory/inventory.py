# ResourceManager's inventory plugin for Ansible: shipped in the resource-manager package, BSD-2-Clause.
"""ResourceManager machines as an Ansible inventory, in one request whatever the fleet's size."""

import hashlib
import json

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

DOCUMENTATION = r"""
name: inventory
short_description: ResourceManager machines as an inventory
description:
  - Reads the machines of a ResourceManager server in one request (C(GET /machines?where=...), unpaged),
    whatever the fleet's size, and honours Ansible's inventory cache.
  - Selects by reservation, job, owner, state or a C(where) filter; groups by state, owner and job, plus
    C(keyed_groups), C(groups) and C(compose) over the machines' fields and tags, as constructed inventories do.
  - The inventory file's name must end in C(rm.yml) or C(rm.yaml).
  - Endpoint and credentials as rmctl takes them, the options here, else C(RM_ENDPOINT), C(RM_TOKEN),
    C(RM_USERNAME)/C(RM_PASSWORD), C(RM_TIMEOUT), else the client config file (C(RM_CONFIG) or
    C(~/.config/resource-manager/client.ini)). Reads need no credentials unless the server says so.
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: ['resource_manager.lab.inventory']
  endpoint:
    description: The server's URL (else RM_ENDPOINT, the config file, http://127.0.0.1:5000).
    type: str
  token:
    description: An API token (else RM_TOKEN or the config file); a token of scope C(read) will do.
    type: str
  username:
    description: A user name for HTTP Basic, when no token is given.
    type: str
  password:
    description: Its password.
    type: str
  timeout:
    description: Seconds for the request (else RM_TIMEOUT, 30).
    type: float
  reservation:
    description:
      - Only the machines of this reservation, e.g. C("{{ lookup('env', 'RM_RESERVATION_ID') }}").
      - Given but empty (the variable is not set) is an error, never the whole fleet.
    type: str
  job_id:
    description: Only the machines of this job (given but empty is an error).
    type: str
  owner:
    description: Only the machines of this owner.
    type: str
  state:
    description: Only machines in these states.
    type: list
    elements: str
  where:
    description: 'A MongoDB filter on the machines, as for C(GET /machines?where=), e.g. C({"tags.rack": "r4"}).'
    type: raw
  group_by:
    description: Built-in groups - C(state) (state_idle, ...), C(owner) (owner_alice) and C(job) (job_build_42).
    type: list
    elements: str
    default: [state, owner, job]
    choices: [state, owner, job]
  prefix:
    description: Host variables are the machine's fields under this prefix (rm_state, rm_tags, ...).
    type: str
    default: rm_
"""

EXAMPLES = r"""
# ci.rm.yml: the machines this CI job reserved (rmctl run, or rmctl reserve, sets RM_RESERVATION_ID)
plugin: resource_manager.lab.inventory
reservation: "{{ lookup('env', 'RM_RESERVATION_ID') }}"
compose:
  ansible_host: rm_tags.ip | default(rm_hostname)
keyed_groups:
  - key: rm_tags.rack
    prefix: rack

# lab.rm.yml: every idle x86_64 machine, cached for 5 minutes
plugin: resource_manager.lab.inventory
state: [idle]
where: {"tags.arch": "x86_64"}
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/rm-inventory
cache_timeout: 300
"""

FIELDS = ("hostname", "state", "owner", "job_id", "reservation", "tags")
BUILT_IN_GROUPS = {"state": "state", "owner": "owner", "job": "job_id"}


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """The resource_manager.lab.inventory plugin."""

    NAME = "resource_manager.lab.inventory"

    def verify_file(self, path):
        """Take inventory files named *rm.yml or *rm.yaml."""
        return super().verify_file(path) and path.endswith(("rm.yml", "rm.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        client = self._client()
        where = self._where()
        key = self._cache_key(path, client.base_url, where)
        use_cache = self.get_option("cache")
        machines = None
        if use_cache and cache:
            machines = self._cache.get(key)
        if machines is None:
            machines = self._fetch(client, where)
            if use_cache:
                self._cache[key] = machines
        self._populate(machines)

    # -- the request --------------------------------------------------------------------------

    def _text_option(self, name):
        value = self.get_option(name)
        if isinstance(value, str) and "{{" in value:
            value = self.templar.template(value)
        return value

    def _client(self):
        try:
            from resource_manager.clientlib.client import ResourceManagerClient
        except ImportError as e:
            raise AnsibleParserError("resource_manager.lab.inventory needs the resource-manager Python package in "
                                     f"Ansible's Python: {e}") from e
        options = {name: self._text_option(name) for name in ("endpoint", "token", "username", "password")}
        try:
            return ResourceManagerClient(endpoint=options["endpoint"], username=options["username"],
                                         password=options["password"], token=options["token"],
                                         timeout=self.get_option("timeout"))
        except ValueError as e:
            raise AnsibleParserError(f"resource_manager.lab.inventory: {e}") from e

    def _where(self):
        where = self.get_option("where")
        if isinstance(where, str):
            where = self.templar.template(where) if "{{" in where else where
            try:
                where = json.loads(where) if where.strip() else {}
            except ValueError as e:
                raise AnsibleParserError(f"where is not JSON: {e}") from e
        if where is None:
            where = {}
        if not isinstance(where, dict):
            raise AnsibleParserError("where must be an object (a MongoDB filter), e.g. {\"tags.rack\": \"r4\"}")
        where = dict(where)
        for option, field in (("reservation", "reservation"), ("job_id", "job_id"), ("owner", "owner")):
            if self.get_option(option) is None:
                continue
            value = self._text_option(option)
            if option != "owner" and not (value or "").strip():
                raise AnsibleParserError(f"{option} is empty (is the variable it reads set?): refusing to "
                                         "select the whole fleet")
            self._constrain(where, field, value)
        states = self.get_option("state")
        if states:
            self._constrain(where, "state", states[0] if len(states) == 1 else {"$in": list(states)})
        return where

    @staticmethod
    def _constrain(where, field, value):
        if field in where and where[field] != value:
            raise AnsibleParserError(f"{field} is selected twice, by its option and by where")
        where[field] = value

    def _cache_key(self, path, endpoint, where):
        # The selection is part of the key: the same file with another RM_RESERVATION_ID is another inventory.
        digest = hashlib.sha256(json.dumps([endpoint, where], sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.get_cache_key(path)}_{digest}"

    def _fetch(self, client, where):
        from resource_manager.clientlib.errors import ResourceManagerError

        # Only the fields that become host variables: less for the server to render and for us to read.
        params = {"projection": json.dumps({field: 1 for field in FIELDS}, separators=(",", ":"))}
        if where:
            params["where"] = json.dumps(where, separators=(",", ":"))
        try:
            # No page, no max_results: every matching machine in one answer (streamed by the server).
            body = client.call("GET", "/machines", params=params)
        except ResourceManagerError as e:
            raise AnsibleParserError(f"resource_manager.lab.inventory: {e}") from e
        finally:
            client.close()
        items = body.get("_items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise AnsibleParserError("resource_manager.lab.inventory: the server did not answer a list of machines")
        return [{field: m.get(field) for field in FIELDS + ("_id",)} for m in items if m.get("hostname")]

    # -- the inventory ------------------------------------------------------------------------

    def _populate(self, machines):
        prefix = self.get_option("prefix")
        strict = self.get_option("strict")
        built_in = [(name, BUILT_IN_GROUPS[name]) for name in self.get_option("group_by")]
        constructed = any(self.get_option(o) for o in ("compose", "groups", "keyed_groups"))
        groups = {}  # (group, value) -> its sanitized name, added once
        for machine in machines:
            host = machine["hostname"]
            self.inventory.add_host(host)
            variables = {f"{prefix}{'id' if k == '_id' else k}": v for k, v in machine.items()}
            # All at once: set_variable checks each name again (valid here) and costs ~0.5 s per 10,000 hosts.
            self.inventory.hosts[host].vars.update(variables)
            for group, field in built_in:
                value = machine.get(field)
                if value in (None, ""):
                    continue
                name = groups.get((group, value))
                if name is None:
                    name = groups[(group, value)] = self.inventory.add_group(
                        self._sanitize_group_name(f"{group}_{value}"))
                self.inventory.add_child(name, host)
            if constructed:  # templating costs per host: only when asked for
                self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
                self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
                self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)
