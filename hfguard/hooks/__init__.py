"""Stop an unsafe model before it enters a codebase (pre-commit / git hooks, hfguard.lock) or a
process (the runtime guard). Submodules are imported on use: `import hfguard` stays cheap."""
