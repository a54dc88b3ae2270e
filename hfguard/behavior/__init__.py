"""The behavior tier: run the model (never its code) and look for planted behaviour.

This is the only tier that instantiates a model. It still never uses ``trust_remote_code``, reads
weights from safetensors (or torch zip files with ``weights_only=True``) and refuses pickles.
Heavy dependencies (torch, transformers, numpy, scipy) are imported inside functions only.
"""

import os

# OpenMP threads that spin-wait for each other make torch several times slower on a busy CPU (3x
# measured on a shared 2-core machine); passive waiting costs nothing on an idle one. Only takes
# effect when set before torch is first imported, which the behavior tier does lazily.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
