from .mnist import MnistCGN, Mechanism

__all__ = ["MnistCGN", "Mechanism"]
