"""The optional C extensions only; the project's metadata is in pyproject.toml.

Multi-buffer MD5 and SHA-1 (triage/features/_mbhash.c, AVX-512 or AVX2 chosen at run time)
and PDQ of grey pictures (triage/features/_pdq.c, the video stage's frames). Optional: without
a C compiler the install goes on, hashing uses hashlib alone and PDQ pdqhash alone. And the
walk's folder listings through libtsk (triage/_tskwalk.c, Debian's libtsk-dev): without it the
walk lists every folder through pytsk3.
"""
from setuptools import Extension, setup

# filetype.SNIFF_RULES is read in C by both the kernel and the lister (triage/_sniffrules.h)
setup(ext_modules=[Extension("triage.features._mbhash", ["triage/features/_mbhash.c"],
                             depends=["triage/_sniffrules.h"],
                             optional=True, extra_compile_args=["-O3"]),
                   # no fused multiply-add: the PDQ kernel must round as the reference does
                   Extension("triage.features._pdq", ["triage/features/_pdq.c"],
                             optional=True, extra_compile_args=["-O3", "-ffp-contract=off"]),
                   Extension("triage._tskwalk", ["triage/_tskwalk.c"], libraries=["tsk"],
                             depends=["triage/_sniffrules.h"],
                             optional=True, extra_compile_args=["-O2"])])
