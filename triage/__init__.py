"""triage: digital triage of seized devices for police digital forensic units."""
__version__ = "0.1.0"
