"""Meta-learning across physical laws (MAML, first-order MAML, Reptile)."""

__all__: list[str] = []
