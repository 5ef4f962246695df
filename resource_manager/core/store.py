"""The names of the collections core reads and writes (the Eve resources' own are in schema.py)."""

MACHINES = "machines"
RESERVATIONS = "reservations"
MACHINE_CLAIMS = "machine_claims"  # {_id: machine _id, hostname, holder: reservation _id, at}
ADDRESS_CLAIMS = "address_claims"  # {_id: "<kind>/<address>", kind, ipkey, holder, doc, at}
ENDS = "reservation_ends"  # end markers of earlier versions; the sweep finishes what they started
ALLOCATIONS = "allocations"
POOLS = "address_pools"
HISTORY = "history"
LOCKS = "locks"
COUNTS = "counts"  # counters kept beside the data (counts.py): machines by state, pools' allocated addresses
