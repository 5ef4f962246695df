"""The reference pages generated from the code, so that they cannot drift from it.

`python -m docgen` (run by `make docs`) rewrites the parts of the pages under docs/ that stand between
`<!-- generated:NAME:start -->` and `<!-- generated:NAME:end -->` markers; the prose around them is
written by hand. `python -m docgen --check` changes nothing and fails when a page is stale
(tests/test_docs_reference.py does the same in `make test`).

Sources: api/config.py (SETTINGS, DEFAULTS) and the client's clientlib/config.py; api/metrics.py (the
collectors, instantiated in a throwaway registry); the argparse parsers of rmctl and the admin tools
(captured from their own `main`, whatever builds them); cli/status.py (ExitStatus and its comments).
What the code does not say in words (what a setting means) is written once, here, keyed by name, and
a name without words fails the check.
"""
