"""The classifier interface, bundled default models and weight loading.

Only this package imports torch, and only in engine.py, zoo/, testing.py and when a
ModelRunner is built; specs, preprocessing and the cascade rule are torch-free.
"""
import os

# torch's OpenMP threads spin while waiting by default. When the scan's decode workers share the
# CPUs with a model actor, the spinning threads stall each other: measured on the 2-core build
# machine under load, torch ran 2.6-4x slower with the default policy than with PASSIVE, while
# onnxruntime (its own thread pool) was unaffected. libgomp reads this once, at load time, so
# it is set before torch can be imported through this package. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
