"""``import hogn`` / ``systems`` / ``meta`` load no submodule (hogn._lazy); every public
name still resolves, and a submodule that shares its name with a function
(``hogn.rollout``, ``hogn.train``, ``systems.generate``) leaves the function bound on
the package whoever imports the submodule first."""

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_importing_the_packages_loads_no_submodule_and_no_pyg():
    out = _run("import sys, hogn, systems, meta\n"
               "loaded = [m for m in sys.modules if m.split('.')[0] in "
               "('hogn', 'systems', 'meta', 'torch_geometric', 'matplotlib', 'scipy')]\n"
               "print(sorted(loaded))")
    assert out.strip() == "['hogn', 'hogn._lazy', 'meta', 'systems']"


@pytest.mark.parametrize("first", ["import hogn.evaluation", "from hogn.rollout import rollout",
                                   "import hogn.cli"])
def test_functions_named_as_their_module_stay_functions(first):
    _run(f"{first}\nimport sys, types\nimport hogn, systems\n"
         "import systems.generate\n"
         "for f, mod in ((hogn.rollout, 'hogn.rollout'), (hogn.train, 'hogn.train'), "
         "(systems.generate, 'systems.generate')):\n"
         "    assert isinstance(f, types.FunctionType) and f.__module__ == mod, f\n"
         "assert isinstance(sys.modules['hogn.rollout'], types.ModuleType)")


def test_every_public_name_resolves():
    _run("import hogn, systems, meta\n"
         "for pkg in (hogn, systems, meta):\n"
         "    for name in pkg.__all__:\n"
         "        assert getattr(pkg, name) is not None, (pkg, name)\n"
         "    assert set(pkg.__all__) <= set(dir(pkg))\n"
         "assert hogn.models.get('hogn').name == 'hogn'\n"
         "assert systems.names()[0] == 'mass-spring' and systems.Pendulum.name == 'pendulum'\n"
         "assert meta.protocol.META_SYSTEMS and hogn.plot.save_figure\n"
         "try:\n"
         "    hogn.no_such_name\n"
         "except AttributeError as exc:\n"
         "    assert 'no_such_name' in str(exc)\n"
         "else:\n"
         "    raise AssertionError('no AttributeError')\n"
         "from hogn import *\n"
         "from meta import *\n"
         "assert callable(rollout) and callable(meta_train)")


def test_graphs_import_pyg_and_networkx_only_to_convert():
    """``hogn.graph`` builds and batches graphs with torch alone; PyTorch Geometric and
    networkx are imported by the conversions to or from their objects."""
    _run("import sys, torch\n"
         "from hogn.graph import GraphBatch, fully_connected, from_networkx, ptr_from_sizes\n"
         "g = GraphBatch(torch.zeros(3, 2), torch.ones(3, 2), torch.ones(3, 1),\n"
         "               fully_connected([3]), ptr_from_sizes([3]))\n"
         "g = GraphBatch.cat([g, g.select([0])])\n"
         "assert g.num_graphs == 2 and g.edge_index.shape == (2, 12)\n"
         "assert 'torch_geometric' not in sys.modules and 'networkx' not in sys.modules\n"
         "back = GraphBatch.from_pyg(g.to_pyg())\n"
         "assert 'torch_geometric' in sys.modules\n"
         "assert torch.equal(back.edge_index, g.edge_index) and torch.equal(back.p, g.p)\n"
         "import networkx as nx\n"
         "assert from_networkx(nx.relabel_nodes(nx.path_graph(3), {0: 'a', 1: 'b', 2: 'c'}))"
         ".shape == (2, 4)\n")
