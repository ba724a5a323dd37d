"""Deep one-class classification: self-supervised representations + one-class classifiers."""

__version__ = "0.1.0"
