"""Self-supervised methods. Each is one file whose ``PLUGIN`` description the catalog reads;
``METHODS`` imports a method's module the first time it is looked up."""

from deep_representation_one_class.methods.base import METHODS, Method

__all__ = ["METHODS", "Method"]
