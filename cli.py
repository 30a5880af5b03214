"""The `triage` command. Click commands only: parse, call the library, format the output."""
from __future__ import annotations

import sys

import click

from triage import __version__
from triage.errors import TriageError


class TriageGroup(click.Group):
    """Turns known errors into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TriageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (OSError, ValueError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=TriageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="triage")
def main():
    """Triage seized devices: which ones probably hold indecent images of children?

    \b
    Typical flow:
      triage hashset import caid.json --name caid --role alert
      triage scan --case CASE_DIR --hashset caid EVIDENCE...
      triage queue --case CASE_DIR
      triage report --case CASE_DIR --out report.html

    Model scores are a ranking aid, not evidence.
    """


# --- evidence: inspect, files (triage/evidence.py, volumes.py, filesystems.py) ---

# --- synth (triage/synth.py) ---

# --- hashset (hashsets/) ---

# --- models (models/) ---

# --- scan (workers/) ---

# --- queue, show, flags, context, export, report (triage/rank.py, flags.py, exports/) ---


if __name__ == "__main__":
    main()
