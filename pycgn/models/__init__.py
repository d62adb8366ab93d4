from .mnist import MnistCGN, Mechanism
from .imagenet import ImagenetCGN, load_imagenet_cgn

__all__ = ["ImagenetCGN", "Mechanism", "MnistCGN", "load_imagenet_cgn"]
