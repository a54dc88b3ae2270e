"""The behavior tier: run the model (never its code) and look for planted behaviour.

This is the only tier that instantiates a model. It still never uses ``trust_remote_code``, reads
weights from safetensors (or torch zip files with ``weights_only=True``) and refuses pickles.
Heavy dependencies (torch, transformers, numpy, scipy) are imported inside functions only.
"""
