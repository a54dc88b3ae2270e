"""Hugging Face Hub targets: pinned resolution, range reads, verified downloads, verdict cache.

Public entry point: `hfguard.hub.check.check_repo(spec, policy, ...)`. Importing this package
imports nothing heavy; `huggingface_hub` is loaded when a Hub target is actually checked.
"""
