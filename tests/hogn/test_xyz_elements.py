"""Element names in extended XYZ: atomic numbers become ASE's symbols, not ``X``."""

from __future__ import annotations

import pytest
import torch

from hogn.xyz import ELEMENTS, element_symbols, read_xyz, write_xyz


def test_atomic_numbers_name_the_elements():
    assert element_symbols([18, 29, 1, 0, 118]) == ["Ar", "Cu", "H", "X", "Og"]
    assert element_symbols(torch.tensor([[8.0], [26.0]], dtype=torch.float64)) == ["O", "Fe"]
    assert len(ELEMENTS) == 119


def test_ase_agrees_on_every_symbol():
    data = pytest.importorskip("ase.data")
    assert list(ELEMENTS) == list(data.chemical_symbols)


@pytest.mark.parametrize("bad", [18.5, -1, 119])
def test_other_numbers_are_refused(bad):
    with pytest.raises(ValueError, match="atomic numbers must be whole numbers from 0 to 118"):
        element_symbols([1, bad])


def test_the_names_reach_the_file(tmp_path):
    q = torch.zeros(2, 3, 3, dtype=torch.float64)
    path = write_xyz(tmp_path / "a.xyz", q, species=element_symbols([18, 18, 29]))
    assert read_xyz(path).species == ["Ar", "Ar", "Cu"]
