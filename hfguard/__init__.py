"""hfguard: vet pre-trained models before anything loads them — pass, flag or block, and why."""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: `import hfguard` stays cheap
    if name in ("guard", "ModelBlocked"):
        from hfguard.runtime import guard as _guard

        return getattr(_guard, name)
    raise AttributeError(f"module 'hfguard' has no attribute {name!r}")
