"""Shared test set-up.

- Physics tests ask for float64 explicitly (``dtype=torch.float64`` on every tensor they
  build); the global default dtype stays float32, as a user's would. A guard fails any
  test that changes it, so no test passes only because another leaked float64 into the
  defaults.
- One intra-op thread for the whole run. The tests use small tensors, where threads
  bring nothing; on a busy 2-core machine every op above PyTorch's parallel grain size
  (an index of ~1,000 edges, say) waits for an OpenMP worker that another process has
  pre-empted, ~10 ms per op instead of ~10 µs, which made single tests 40x slower.
  Results do not depend on the thread count.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention (OpenMP spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _default_dtype_unchanged():
    assert torch.get_default_dtype() == torch.float32
    yield
    assert torch.get_default_dtype() == torch.float32, "a test changed the default dtype"
