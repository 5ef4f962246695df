"""No import cycles between the modules of a subpackage (issue 23): each imports the others one way."""

import itertools

import grimp
import pytest

GRAPH = grimp.build_graph("resource_manager", cache_dir=None)


@pytest.mark.parametrize("package", ["resource_manager.cli", "resource_manager.localdb", "resource_manager.api",
                                     "resource_manager.api.routes", "resource_manager.clientlib",
                                     "resource_manager.admin"])
def test_siblings_import_one_way(package):
    siblings = sorted(m for m in GRAPH.modules if m.rpartition(".")[0] == package)
    cycles = [(a, b) for a, b in itertools.combinations(siblings, 2)
              if GRAPH.chain_exists(a, b) and GRAPH.chain_exists(b, a)]
    assert cycles == []
