"""VisionLLM v2-nano: world, instruction data, experts, model, training, export and evaluation."""

import os

# Debian's torch calls the pthread OpenBLAS, which torch.set_num_threads does not limit: without this,
# "2 threads" run matrix products on 4 and oversubscribe a 2-core machine. Must be set before torch loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
