"""The optional C extension only; the project's metadata is in pyproject.toml.

Multi-buffer MD5 and SHA-1 (triage/features/_mbhash.c, AVX-512 or AVX2 chosen at run time).
Optional: without a C compiler the install goes on and hashing uses hashlib alone.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("triage.features._mbhash", ["triage/features/_mbhash.c"],
                             optional=True, extra_compile_args=["-O3"])])
