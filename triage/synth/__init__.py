"""`triage synth`: a reproducible synthetic fleet of seized devices with known answers.

Modules: pictures (procedural pictures, EXIF, PDQ/pHash), filesystems (ext4/FAT32/NTFS images
without mounting), ntfs (libntfs-3g writer), disks (MBR/GPT, BitLocker-like volume, raw/split/E01),
fleet (the plan, the hash sets and truth.json).
"""
from triage.synth.fleet import PROFILES, build_fleet

__all__ = ["build_fleet", "PROFILES"]
