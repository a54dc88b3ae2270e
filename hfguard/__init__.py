"""hfguard: vet pre-trained models before anything loads them — pass, flag or block, and why."""

__version__ = "0.1.0"
