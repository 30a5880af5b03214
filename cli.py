"""The `triage` command. Click commands only: parse, call the library, format the output."""
from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import click

from triage import __version__
from triage.errors import TriageError


INTERNAL_ERROR = 70        # EX_SOFTWARE: a bug in triage, not the user's input
USER_ERROR = 2

_case_for_log: list[str] = []    # the --case of this command, where an internal error is logged


def _user_error(message: str):
    from triage.units import terminal_safe   # the message may quote evidence names
    click.echo(f"error: {terminal_safe(message)}", err=True)
    sys.exit(USER_ERROR)


def _internal_error(exc: BaseException):
    """One line saying it is a bug, the traceback in a log file, exit 70."""
    import os
    import time
    import traceback

    from triage.units import terminal_safe

    case = _case_for_log[-1] if _case_for_log else None
    if case and Path(case).is_dir():
        folder = Path(case) / "logs"
    else:
        from triage.home import triage_home
        folder = triage_home() / "logs"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    where = "not written"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = folder / f"internal-error-{stamp}-{os.getpid()}.log"
        with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(f"triage {__version__}: {' '.join(sys.argv)}\n")
            fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        where = str(log)
    except OSError as log_exc:
        where = f"not written ({log_exc.strerror})"
    first = (str(exc).splitlines() or [""])[0][:200]
    click.echo(f"internal error (a bug in triage, not a problem with your input): "
               f"{type(exc).__name__}: {terminal_safe(first)}; traceback: {where}", err=True)
    sys.exit(INTERNAL_ERROR)


def _os_error_line(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file: {exc.filename}"
    if exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


class TriageGroup(click.Group):
    """User mistakes (bad path, bad value, corrupt input: TriageError and its kinds, OSError,
    a damaged case store) are one `error:` line and exit 2; anything else is a bug: one line,
    the traceback in a log file, exit 70. A closed pipe (`| head`) ends quietly with exit 0."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:          # a bad option or value: one line, exit 2
            _usage_error(exc)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort,
                SystemExit, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            _quiet_closed_pipe()
        except TriageError as exc:
            _user_error(str(exc))
        except OSError as exc:
            _user_error(_os_error_line(exc))
        except sqlite3.DatabaseError as exc:    # a full disk, a damaged case store: one line
            _user_error(f"case store: {exc}")
        except Exception as exc:                # noqa: BLE001 - every bug ends here, logged
            _internal_error(exc)


def _usage_error(exc: click.UsageError):
    """Click's usage error (an unknown option, a value out of range) as one `error:` line
    naming the help to read, instead of click's three lines (usage, hint, error)."""
    path = exc.ctx.command_path.split()[1:] if exc.ctx is not None else []
    _user_error(f"{exc.format_message().rstrip('.')}; see "
                f"`{' '.join(['triage', *path, '--help'])}`")


def _quiet_closed_pipe():
    """The reader of stdout went away (`triage queue | head`): nothing more to say, exit 0."""
    import os
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass
    sys.exit(0)


# --- options declared once -------------------------------------------------------------------

_FORMAT_HELP = {"table": "table for people", "json": "json: one document",
                "jsonl": "jsonl: one object per line", "csv": "csv with a header row"}


def output_format(*choices: str, default: str = "table"):
    """`--format` with the values that make sense for the command, and `--json` as its alias.
    The command receives `fmt`."""
    import functools

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, as_json=False, **kwargs):
            if as_json:
                kwargs["fmt"] = "json"
            return fn(*args, **kwargs)
        wrapper = click.option("--json", "as_json", is_flag=True,
                               help="Same as --format json.")(wrapper)
        return click.option("--format", "fmt", type=click.Choice(list(choices)), default=default,
                            show_default=True,
                            help="; ".join(_FORMAT_HELP[c] for c in choices) + ".")(wrapper)
    return decorate


_MODELS_DIR_OPTION = click.option(
    "--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where added models live (default: $TRIAGE_HOME/models, ~/.triage/models).")


def _remember_case(_ctx, _param, value):
    if value:
        _case_for_log.append(value)
    return value


def _echo_json(obj) -> None:
    from triage.output import dumps
    click.echo(dumps(obj))


def _echo_jsonl(rows) -> None:
    from triage.output import dumps
    for row in rows:
        click.echo(dumps(row, indent=None))


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

def _key_options(fn):
    fn = click.option("--password", default=None, metavar="TEXT",
                      help="Password to unlock an encrypted volume (BitLocker, LUKS, FileVault "
                           "2, APFS) or a password-protected zip or UFDR extraction.")(fn)
    fn = click.option("--recovery-key", default=None, metavar="KEY",
                      help="BitLocker recovery key (48 digits, dashes optional) to unlock an encrypted volume.")(fn)
    return fn


@main.command()
@click.argument("evidence", metavar="EVIDENCE")
@_key_options
@click.option("--no-count", is_flag=True, help="Skip the file counts (no file-system walk).")
@output_format("table", "json")
def inspect(evidence, recovery_key, password, no_count, fmt):
    """Describe a device: container, media size, stored hashes, partitions, file systems,
    file counts and what could not be examined.

    \b
    EVIDENCE is the first segment of an image (raw/dd, split raw .000/.001/.aa,
    E01/Ex01, VHD/VHDX, VMDK, QCOW2; the other segments are found) or a folder
    of logical files. The container is told by its bytes, not its name.

    \b
    A volume that cannot be examined (BitLocker or LUKS without a key, an
    unknown or corrupt file system, a read error) is listed under "not
    examined" with its offset, size and reason: it is never silently skipped.

    \b
    Examples:
      triage inspect suspect.E01
      triage inspect usb.dd --recovery-key 123456-...-123456 --json
    """

    from triage.evidence import open_evidence
    from triage.inventory import describe

    as_json = fmt == "json"
    with open_evidence(evidence) as ev:
        if as_json or not sys.stderr.isatty():
            info = describe(ev, recovery_key, password, count_files=not no_count)
        else:
            from rich.console import Console
            with Console(stderr=True).status("walking file systems") as status:
                info = describe(ev, recovery_key, password, count_files=not no_count,
                                progress=lambda text: status.update(text))
    if as_json:
        _echo_json(info)
        return
    from triage.inventory import render_inspect
    render_inspect(info)


@main.command()
@click.argument("evidence", metavar="EVIDENCE")
@click.option("--hash", "hash_spec", default="", metavar="md5,sha1,sha256",
              help="Hashes to compute, comma-separated; all in one pass over each file's content.")
@output_format("jsonl", "csv", "json", default="jsonl")
@click.option("--files-only", is_flag=True, help="Leave folders out (they are listed by default, as fls does).")
@_key_options
def files(evidence, hash_spec, fmt, files_only, recovery_key, password):
    """List every file of a device, deleted, orphaned and alternate streams included.

    \b
    EVIDENCE is the first segment of an image (raw/dd, split raw, E01/Ex01,
    VHD/VHDX, VMDK, QCOW2) or a folder of logical files.

    \b
    Paths are absolute from the file-system root, as `fls -p` prints them; an
    NTFS stream is "/path:stream"; orphans sit under "/$OrphanFiles". Keys:
    path name size allocated dir orphan inode ads volume_offset fs_type type
    ext_mismatch [md5 sha1 sha256] mtime atime ctime crtime (ISO-8601 UTC or
    null), and "error" when a file's content could not be read.
    Every gap is reported on stderr ("not examined: WHERE (KIND, BYTES): WHY"),
    and no hash is printed for a file that could not be read to its size.
    Exit status: 0 when everything was read; 1 when something could not be
    read (a folder, a file, an encrypted or corrupt volume) but the rest was
    listed, as fls does; 2 when nothing could be examined. Unallocated space
    is reported (nothing carves it yet) but does not change the status.

    \b
    Examples:
      triage files suspect.E01 --hash md5,sha1 > listing.jsonl
      triage files phone_export/ --format csv --hash sha256 > files.csv
      icat -o $((VOLUME_OFFSET / 512)) IMAGE INODE    # the same bytes, with TSK
    """
    import json as jsonlib

    from triage.evidence import open_evidence
    from triage.inventory import CSV_FIELDS, gap_line, listable, parse_hashes, read_failed, rows
    from triage.units import SafeDictWriter

    hashes = parse_hashes(hash_spec)
    with open_evidence(evidence) as ev:
        volumes, coverage = listable(ev, recovery_key, password)
        for c in coverage:
            click.echo(f"not examined: {gap_line(c, volumes)}", err=True)
        problems: list = []
        listed = rows(ev, volumes, hashes, include_dirs=not files_only, problems=problems)
        if fmt == "csv":
            writer = SafeDictWriter(sys.stdout, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(listed)
        elif fmt == "json":       # one document: a listing can be large, so it is streamed
            sys.stdout.write("[")
            for i, row in enumerate(listed):
                sys.stdout.write(("," if i else "") + "\n" + jsonlib.dumps(row))
            sys.stdout.write("\n]\n")
        else:
            for row in listed:
                sys.stdout.write(jsonlib.dumps(row) + "\n")
        sys.stdout.flush()
        problems.extend(ev.damage())
        for c in problems:
            click.echo(f"not examined: {gap_line(c, volumes)}", err=True)
        if read_failed(list(coverage) + problems):
            # as fls and icat do: something could not be read, though the rest was listed
            raise SystemExit(1)


# --- synth (triage/synth.py) ---

@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, writable=True),
              help="Folder to write the fleet into (devices/, hash sets, context.csv, truth.json).")
@click.option("--devices", default=6, show_default=True, type=click.IntRange(1, 99),
              help="How many devices. The first six cover every role; more repeat the extra roles.")
@click.option("--seed", default=1, show_default=True, type=int,
              help="Same seed, same pictures and the same truth.")
@click.option("--size", type=click.Choice(["small", "medium", "large"]), default="small", show_default=True,
              help="small: 10-60 MB per device (tests); medium: ~400 MB; large: the first device "
                   "3.4 GB with ~20k files and 12 MP photos (benchmarks).")
@output_format("table", "json")
def synth(out, devices, seed, size, fmt):
    """Build a synthetic fleet of seized-device images with known answers.

    \b
    Devices mix ext4, FAT32 and NTFS, bare or under MBR/GPT, as raw, split raw
    and E01. They hold ordinary documents and procedural pictures, and planted
    "alert stand-ins": generated pictures labelled ALERT STAND-IN, never real
    material. Some are exact copies (deleted, zipped, renamed, in DCIM with
    camera EXIF), some near-duplicates. One device has a BitLocker-like
    volume, one is clean, one holds skin-toned abstract shapes (no people)
    that the explicit-content model scores high.

    \b
    Writes into OUT:
      devices/          one image (or one folder of segments) per device
      evidence.txt      the path to pass to `triage scan` for each device
      alert.vics.json   alert set, VICS 2.0 #Media, UK profile (Category 1/2/3 = A/B/C)
      nsrl.db           known-software set, NSRL RDSv3 minimal layout
      alert.pdq.txt     PDQ of the alert pictures (hash,quality,name)
      alert.phash.txt   64-bit pHash of the alert pictures
      alert.vpdq.txt    vPDQ of the alert videos
      context.csv       case context, one row per device
      truth.json        what was planted where, and which device must rank above which

    \b
    Example:
      triage synth --out fleet --devices 6 --seed 7
      triage scan --case case --hashset fleet/alert.vics.json --hashset fleet/nsrl.db \\
          --hashset fleet/alert.pdq.txt --hashset fleet/alert.phash.txt \\
          --hashset fleet/alert.vpdq.txt --context fleet/context.csv $(cat fleet/evidence.txt)
    (the PDQ, pHash and vPDQ sets find the near-duplicates; without them the
    near-only device has no match)
    """
    import contextlib
    from pathlib import Path

    from triage.synth import build_fleet

    as_json = fmt == "json"
    if as_json or size == "small":
        truth = build_fleet(Path(out), devices=devices, seed=seed, size=size)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, transient=True) as bar, contextlib.ExitStack():
            task = bar.add_task("synth", total=None)

            def report(stage, done, total):
                bar.update(task, description=stage, completed=done, total=max(total, 1))

            truth = build_fleet(Path(out), devices=devices, seed=seed, size=size, progress=report)
    summary = {
        "out": str(Path(out).resolve()), "seed": seed, "size": size,
        "devices": [{"id": d["id"], "role": d["role"], "evidence": d["evidence"], "format": d["format"],
                     "table": d["partition_table"],
                     "volumes": [v["fs_type"] or v["encrypted"] for v in d["volumes"]],
                     "media_size": d["media_size"], "files": d["files"],
                     "exact": d["expect"]["exact_matches"], "near": d["expect"]["near_matches"]}
                    for d in truth["devices"]],
        "alerts": len(truth["alerts"]),
    }
    if as_json:
        _echo_json(summary)
        return
    from rich.table import Table

    from triage.units import human_bytes

    table = Table(title=f"synthetic fleet (seed {seed}, {size}) in {summary['out']}")
    for col in ("device", "role", "evidence", "volumes", "size", "files", "exact", "near"):
        # folded, never cut short with an ellipsis: "fat32+BitLocker" is the point of dev04
        table.add_column(col, overflow="fold", justify="right" if col in ("size", "files", "exact",
                                                                            "near") else "left")
    for d in summary["devices"]:
        table.add_row(d["id"], d["role"], Path(d["evidence"]).name,
                      " + ".join(d["volumes"]) + f" ({d['table']})", human_bytes(d["media_size"]),
                      str(d["files"]), str(d["exact"]), str(d["near"]))
    _console().print(table)
    # the scan that uses every alert set of the fleet (whole, to copy)
    sets = " ".join(f"--hashset {_shell_word(os.path.join(out, name))}" for name in
                    ("alert.vics.json", "nsrl.db", "alert.pdq.txt", "alert.phash.txt",
                     "alert.vpdq.txt"))
    click.echo(f"next: {_prog()} scan --case case {sets} --context "
               f"{_shell_word(os.path.join(out, 'context.csv'))} "
               f"$(cat {_shell_word(os.path.join(out, 'evidence.txt'))})")

# --- hashset (hashsets/) ---

_STORE_OPTION = click.option(
    "--store", "store_dir", default=None, type=click.Path(file_okay=False),
    help="Hash-set store folder [default: $TRIAGE_HOME/hashsets, TRIAGE_HOME=~/.triage].")


def _hashset_store(store_dir):
    from hashsets.store import HashSetStore

    return HashSetStore(store_dir)


@main.group()
def hashset():
    """Hash sets: import CAID/Project VIC, NSRL, hashdeep, plain lists, PDQ; look hashes up.

    \b
    Each set has a role: alert (known illegal: CAID, Project VIC, agency lists),
    ignore (known software: NSRL) or watch (of interest, not alerting). Sets are
    compiled into a store folder and looked up together, exact (MD5, SHA-1,
    SHA-256) and perceptual (PDQ within 31 bits, pHash within 8).

    \b
    Examples:
      triage hashset import caid_2025.json --name caid --role alert
      triage hashset import RDS_2025.03.1_modern_minimal.db --name nsrl --role ignore
      triage hashset list
      triage hashset lookup d41d8cd98f00b204e9800998ecf8427e
    """


@hashset.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="Name of the set in the store (letters, digits, . _ -).")
@click.option("--role", type=click.Choice(["alert", "ignore", "watch"]), default=None,
              help="alert, ignore or watch [default: alert; NSRL must be ignore].")
@click.option("--input-format", "input_fmt", default=None,
              type=click.Choice(["vics", "nsrl-rdsv3", "nsrl-txt", "hashdeep", "plain", "encase",
                                 "pdq", "phash"]),
              help="The file's format, instead of detection from content (e.g. bare 64-hex "
                   "lines as pdq, not sha256).")
@click.option("--profile", default=None,
              help="VICS category profile (UK, US, ...) when the file's context URL lacks it.")
@click.option("--category-map", default=None,
              help="Category scheme: uk-caid, us-projectvic, or RAW=LABEL:SEVERITY,... "
                   "(e.g. '1=A:3,2=B:2,3=C:1,0=non-pertinent:0'). Severity 0 hits count as ignore.")
@click.option("--delta", is_flag=True, help="Add FILE's entries to the existing set NAME.")
@click.option("--replace", is_flag=True, help="Replace an existing set NAME.")
@_STORE_OPTION
@output_format("table", "json")
def hashset_import(file, name, role, input_fmt, profile, category_map, delta, replace, store_dir,
                   fmt):
    """Import FILE as hash set NAME; the format is read from the content.

    \b
    Formats: VICS JSON 1.x/2.0 (#Media and #Cases), NSRL RDSv3 SQLite (minimal and
    full) and NSRLFile.txt, hashdeep/md5deep, plain MD5/SHA-1/SHA-256 lists and CSV,
    EnCase v3/v4 .hash, PDQ (hash,quality[,name] or 'pdq HEX'), pHash (16 hex).
    Bad lines are counted and shown, never fatal. PDQ entries of quality < 50 are
    left out (they match near-blank pictures).

    \b
    Examples:
      triage hashset import caid.json --name caid --role alert
      triage hashset import vic_us.json --name vic --profile US
      triage hashset import caid_update.json --name caid --delta
      triage hashset import known_bad.pdq.txt --name pdq-bad --input-format pdq
    """
    import time as _time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    as_json = fmt == "json"
    store = _hashset_store(store_dir)
    t0 = _time.monotonic()
    columns = (TextColumn("importing {task.description}"), BarColumn(),
               TextColumn("{task.fields[records]:,} records, {task.fields[rate]:,.0f}/s"),
               TimeElapsedColumn())
    with Progress(*columns, transient=True, disable=as_json or not sys.stderr.isatty(),
                  console=None) as bar:
        task = bar.add_task(Path(file).name, total=1.0, records=0, rate=0.0)

        def report(records, fraction):
            rate = records / max(_time.monotonic() - t0, 1e-6)
            bar.update(task, completed=fraction if fraction is not None else 0, records=records,
                       rate=rate)

        if delta:
            info = store.add_delta(name, file, format=input_fmt, progress=report)
        else:
            info = store.import_file(file, name, role or "alert", format=input_fmt, profile=profile,
                                     category_map=category_map, progress=report, replace=replace)
    seconds = _time.monotonic() - t0
    if as_json:
        _echo_json(dict(info.to_dict(), seconds=round(seconds, 3)))
        return
    counts = ", ".join(f"{n:,} {alg}" for alg, n in info.counts.items())
    click.echo(f"{info.name}: {info.role}, {info.format}, version {info.version}: "
               f"{info.records:,} records ({counts}), {info.rejected:,} rejected, in "
               f"{seconds:.1f} s ({info.records / max(seconds, 1e-6):,.0f} records/s)")
    if info.scheme and info.scheme != "none":
        click.echo(f"  categories: {info.scheme}" + (f" (profile {info.profile})" if info.profile else ""))
    if info.skipped_low_quality:
        click.echo(f"  left out {info.skipped_low_quality:,} PDQ entries of quality < 50")
    if info.rejected:
        click.echo(f"  rejected {info.rejected:,} records, e.g.:", err=True)
        for ex in info.rejected_examples:
            click.echo(f"    {ex}", err=True)


@hashset.command("list")
@_STORE_OPTION
@output_format("table", "json", "jsonl")
def hashset_list(store_dir, fmt):
    """The sets in the store: role, format, version, entries, source and import time.

    \b
    Example:
      triage hashset list --format json | jq '.[] | {name, role, version, records}'
    """

    store = _hashset_store(store_dir)
    infos = store.sets()
    if fmt == "json":
        _echo_json([i.to_dict() for i in infos])
        return
    if fmt == "jsonl":
        _echo_jsonl(i.to_dict() for i in infos)
        return
    if not infos:
        click.echo(f"no hash sets in {store.root}; add one with `triage hashset import`")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("name", "role", "format", "version", "records", "hashes", "rejected", "source",
                "imported"):
        table.add_column(col, justify="right" if col in ("records", "rejected") else "left")
    for i in infos:
        table.add_row(i.name, i.role, i.format + (f" ({i.scheme})" if i.scheme not in ("", "none") else ""),
                      i.version, f"{i.records:,}",
                      ", ".join(f"{n:,} {alg}" for alg, n in i.counts.items()),
                      f"{i.rejected:,}", i.source_name, _table_time_of(i.imported_at))
    _console(width=None if sys.stdout.isatty() else 160).print(table)


def _table_time_of(text: str) -> str:
    """An ISO-8601 time of a record, as tables show times (date, time and zone)."""
    from triage.output import parse_time, table_time

    try:
        return table_time(parse_time(text))
    except TriageError:         # not a time this tool wrote: shown as it is
        return text


@hashset.command("lookup")
@click.argument("hashes", nargs=-1, required=True)
@click.option("--algorithm", "algorithm", default=None,
              type=click.Choice(["md5", "sha1", "sha256", "pdq", "phash"]),
              help="[default: from the length: 32 md5, 40 sha1, 64 sha256 and pdq, 16 phash]")
@click.option("--distance", default=None, type=click.IntRange(0, 256),
              help="Perceptual match distance [default: pdq 31, phash 8].")
@click.option("--set", "set_names", multiple=True, help="Only this set (repeatable).")
@_STORE_OPTION
@output_format("table", "json", "jsonl")
def hashset_lookup(hashes, algorithm, distance, set_names, store_dir, fmt):
    """Look HASHES up in every set ('-' reads them from stdin, one per line).

    \b
    Examples:
      triage hashset lookup d41d8cd98f00b204e9800998ecf8427e
      cut -d, -f2 listing.csv | triage hashset lookup - --json
    """
    from dataclasses import asdict

    from hashsets.store import lookup_many, open_sets

    values = []
    for h in hashes:
        values.extend(line.strip() for line in sys.stdin if line.strip()) if h == "-" else values.append(h.strip())
    results = lookup_many(open_sets(store_dir, list(set_names) or None), values, algorithm,
                          distance)
    if fmt != "table":
        out = [{"hash": v, "hits": [asdict(h) for h in hits]} for v, hits in zip(values, results)]
        _echo_json(out) if fmt == "json" else _echo_jsonl(out)
        return
    for v, hits in zip(values, results):
        if not hits:
            click.echo(f"{v}  no match")
        for h in hits:
            # the vocabulary of the queue, flags and exports: "Category A" (raw in --json)
            cat = f" Category {h.category_label or h.category}" if h.category else ""
            near = f" distance {h.distance}" if h.algorithm in ("pdq", "phash") else ""
            click.echo(f"{v}  {h.role}: {h.set_name} {h.set_version} {h.algorithm}{near}{cat}"
                       f" severity {h.severity}")


@hashset.command("remove")
@click.argument("name")
@_STORE_OPTION
def hashset_remove(name, store_dir):
    """Remove set NAME from the store (its compiled files; the source file is untouched).

    \b
    Example:
      triage hashset remove caid-2024
    """
    info = _hashset_store(store_dir).remove(name)
    click.echo(f"removed {info.name} ({info.records:,} records, version {info.version})")


# --- models (models/) ---

_MODEL_HONESTY = ("The bundled models were trained on adult content: they are not CSAM detectors, "
                  "and every score is a ranking aid, not evidence.")


@main.group()
def models():
    """List, add and verify the picture classifiers `triage scan --model NAME` can run.

    \b
    Bundled, offline:
      default     open_nsfw explicit score + faces (dlib HOG) + apparent age (CC0 dlib model)
      open_nsfw   the explicit score alone
    Your own (for example a licensed classifier trained on CAID grading): write a TOML spec
    beside the weights (TorchScript .pt, torch.export .pt2, or a state dict + built-in arch)
    and run `triage models add SPEC`. Every model's sha256 is checked before any use.

    The bundled models were trained on adult content: they are not CSAM detectors, and every
    score is a ranking aid, not evidence.
    """


@models.command("list")
@_MODELS_DIR_OPTION
@output_format("table", "json")
def models_list(models_dir, fmt):
    """Show every known model: name, version, format, licence, labels and thresholds.

    Nothing is hashed here; `triage models verify` checks the weights.
    """

    from models.registry import list_models
    from models.spec import describe

    rows = []
    for name, spec in list_models(models_dir):
        row = describe(spec) if spec else {"name": name, "error": "spec unreadable"}
        rows.append({"id": name, **row})
    if fmt == "json":
        _echo_json(rows)
        return
    from rich.table import Table

    from rich import box

    # fits 80 columns without breaking a label: the format under the name, labels wrap at
    # their commas
    table = Table(title="models", caption=_MODEL_HONESTY, box=box.SIMPLE_HEAD, pad_edge=False,
                  title_justify="left", caption_justify="left")
    for col in ("name (format)", "version", "licence", "labels (threshold)", "sha256"):
        table.add_column(col, overflow="fold", no_wrap=col != "labels (threshold)",
                         ratio=1 if col == "labels (threshold)" else None)
    for row in rows:
        if "error" in row:
            table.add_row(row["id"], "", "", row["error"], "")
            continue
        labels = ", ".join(f"{lab} ({row['thresholds'][lab]})" if lab in row["thresholds"] else lab
                           for lab in row["labels"]) if len(row["labels"]) <= 4 else \
            f"{len(row['labels'])} labels: {row['labels'][0]} .. {row['labels'][-1]}"
        if "faces" in row:
            labels += f", faces, minor_likelihood ({row['thresholds'].get('minor_likelihood', '-')})"
        table.add_row(f"{row['id']}\n({row['format']})", row["version"], row["licence"], labels,
                      row["sha256"][:12])
    _console().print(table)


@models.command("add")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_MODELS_DIR_OPTION
@click.option("--force", is_flag=True, help="Replace an added model of the same name.")
@click.option("--no-load", is_flag=True, help="Only check the sha256; skip the trial load and run.")
@output_format("table", "json")
def models_add(spec, models_dir, force, no_load, fmt):
    """Register a model from its TOML SPEC (see README, "Models").

    The weights' sha256 must match the spec's; the model is then loaded and run once on a blank
    picture to check that its outputs match the spec's labels, and the spec and weights are
    copied under $TRIAGE_HOME/models/NAME/.
    """
    import json

    from models.registry import add_model

    added = add_model(spec, models_dir, force=force, check_load=not no_load)
    if fmt == "json":
        click.echo(json.dumps({"name": added.name, "path": str(added.path), "sha256": added.sha256}))
    else:
        click.echo(f"added {added.name} ({added.sha256[:16]}...) at {added.path}")


@models.command("verify")
@click.argument("names", nargs=-1)
@_MODELS_DIR_OPTION
@output_format("table", "json")
def models_verify(names, models_dir, fmt):
    """Check the sha256 of every file of NAMES (default: all models).

    Exit code 0 when all match; 2 with one `error:` line per failing model otherwise.
    """
    import json

    from models.registry import verify_models

    checks = verify_models(list(names), models_dir)
    if fmt == "json":
        click.echo(json.dumps([{"name": c.name, "ok": c.ok, "message": c.message} for c in checks]))
    else:
        for c in checks:
            if c.ok:
                click.echo(f"{c.name}: {c.message}")
    failed = [c for c in checks if not c.ok]
    for c in failed:
        click.echo(f"error: {c.message}", err=True)
    if failed:
        sys.exit(2)


# --- scan (workers/) ---

def _spool_folder(ctx, param, value: str) -> str:
    """--video-spool: "off", or a folder that exists, as an absolute path (the workers may
    run elsewhere than the shell's folder)."""
    if not value:
        return ""
    if value.strip().lower() == "off":
        return "off"
    if not os.path.isdir(value) or not os.access(value, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{value!r} is not a folder this user can write to "
                                 "(or give off)")
    return os.path.abspath(value)


def _video_options(command):
    """The video stage's options of `triage scan` (issue 15), gathered into one `video`
    argument: ScanOptions fields (video, video_limits, vpdq)."""
    import functools

    from hashsets.vpdq import DEFAULT_RULE
    from triage.videolimits import DEFAULT_LIMITS as L

    @functools.wraps(command)
    def gathered(*args, no_video, video_sample_seconds, video_frames_per_sqrt_second,
                 video_max_frames, video_seconds, video_spool, vpdq_distance, vpdq_quality,
                 vpdq_query_percent, vpdq_index_percent, **kwargs):
        limits = {"sample_seconds": video_sample_seconds,
                  "frames_per_sqrt_second": video_frames_per_sqrt_second,
                  "max_frames": video_max_frames, "seconds": video_seconds}
        rule = {"distance": vpdq_distance, "quality": vpdq_quality,
                "query_percent": vpdq_query_percent, "index_percent": vpdq_index_percent}
        # only what differs from the defaults, so --resume compares like with like
        kwargs["video"] = {
            "video": not no_video,
            "video_spool": video_spool or "",
            "video_limits": tuple((k, v) for k, v in limits.items() if v != getattr(L, k)),
            "vpdq": tuple((k, v) for k, v in rule.items() if v != getattr(DEFAULT_RULE, k))}
        return command(*args, **kwargs)

    options = [
        click.option("--no-video", is_flag=True,
                     help="Do not decode videos: each is matched whole (exact hashes) and its "
                          "frames stay a coverage gap."),
        click.option("--video-sample-seconds", type=click.FloatRange(0), default=L.sample_seconds,
                     show_default=True,
                     help="Besides keyframes, one frame per this many seconds (0: keyframes "
                          "only, fastest)."),
        click.option("--video-frames-per-sqrt-second", type=click.FloatRange(0.1),
                     default=L.frames_per_sqrt_second, show_default=True,
                     help="Frame cap per video: this times the square root of its duration "
                          f"(at least {L.min_frames})."),
        click.option("--video-max-frames", type=click.IntRange(1), default=L.max_frames,
                     show_default=True, help="Frame cap per video, whatever its length."),
        click.option("--video-seconds", type=click.FloatRange(1), default=L.seconds,
                     show_default=True,
                     help="Wall-clock limit per video; what is left is a coverage gap saying "
                          "how many seconds were examined."),
        click.option("--video-spool", metavar="DIR|off", default="", callback=_spool_folder,
                     help=f"A video over {L.max_bytes // (1 << 20)} MiB is written, as it is "
                          "hashed, to an unnamed temporary file in DIR (default: "
                          "$TRIAGE_HOME/spool; freed when decoded, or if the worker dies) and "
                          "decoded from there. off: such videos are matched whole only and "
                          "their frames stay a coverage gap."),
        click.option("--vpdq-distance", type=click.IntRange(0, 256), default=DEFAULT_RULE.distance,
                     show_default=True, help="vPDQ: PDQ distance at which two frames match."),
        click.option("--vpdq-quality", type=click.IntRange(0, 100), default=DEFAULT_RULE.quality,
                     show_default=True, help="vPDQ: frames of lower PDQ quality are not compared."),
        click.option("--vpdq-query-percent", type=click.FloatRange(0, 100),
                     default=DEFAULT_RULE.query_percent, show_default=True,
                     help="vPDQ: share of this video's frames that must match the known video."),
        click.option("--vpdq-index-percent", type=click.FloatRange(0, 100),
                     default=DEFAULT_RULE.index_percent, show_default=True,
                     help="vPDQ: share of the known video's frames that must be matched "
                          "(ThreatExchange's default 0: a clip of a known video matches)."),
    ]
    for option in reversed(options):
        gathered = option(gathered)
    return gathered


@main.command()
@click.option("--case", "case_dir", required=True, type=click.Path(file_okay=False),
              callback=_remember_case,
              help="Case directory (created 0700 if new). Holds case.sqlite and flags.jsonl.")
@click.option("--case-ref", default=None, metavar="REF",
              help="The case reference (crime or job number), for the report's title, VICS "
                   "CaseNumber and CASE. Default: the case folder's name.")
@click.option("--hashset", "hashset_args", multiple=True, metavar="NAME_OR_FILE",
              help="Hash set to match against: a set name in the store, or a file (VICS/CAID "
                   "JSON, NSRL, hashdeep, md5sum, ...) imported into CASE_DIR/hashsets. Repeat "
                   "for several. Default: every set in the store.")
@click.option("--store", "store_root", type=click.Path(file_okay=False), default=None,
              help="Hash-set store for NAME arguments. Default: $TRIAGE_HOME/hashsets.")
@click.option("--context", "context_file", type=click.Path(exists=True, dir_okay=False),
              help="CSV or JSON with one row per device: evidence, exhibit, suspect, "
                   "access_to_children, custody_deadline, notes.")
@click.option("--model", default="none", show_default=True, metavar="NAME|default|none",
              help="Image model to score pictures that have no hash match. A ranking aid, "
                   "not evidence.")
@click.option("--model-precision", type=click.Choice(["auto", "fp32", "bf16", "int8"]),
              default="auto", show_default=True,
              help="Numbers the model computes in. auto: chosen from the CPU's flags, each "
                   "precision used only if it passes the accuracy gate against fp32 (see "
                   "README, Models); the run records which and why.")
@click.option("--model-first-stage", type=click.Choice(["on", "off"]), default="on",
              show_default=True,
              help="The model's cheap first stage (the default model: pictures with no "
                   "skin-coloured pixel) rules pictures out before the network; each is stored "
                   "with its reason. off: every picture that passes the skips goes to the "
                   "network.")
@click.option("--mode", type=click.Choice(["triage", "full"]), default="triage", show_default=True,
              help="triage: likely places first, stop a device after --stop-after exact alert "
                   "matches and one full pass over its pictures; full: read everything.")
@click.option("--stop-after", default=10, show_default=True, type=click.IntRange(1),
              help="Triage mode: exact alert matches after which a device may stop early.")
@click.option("--address", default=None, metavar="RAY_ADDRESS",
              help="Join a Ray cluster (`ray start --head` on one machine, `ray start "
                   "--address=...` on the others). Evidence must be readable at the same path "
                   "on every node. Default: a private local Ray instance.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="CPU workers (local) or batches in flight / 2 (cluster). Default: all cores.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted scan of the same case, skipping finished batches.")
@click.option("--replace", is_flag=True,
              help="Scan devices again even with weaker settings than their last run (fewer "
                   "alert sets, older set versions, no model). Earlier runs stay in the case "
                   "and in `triage show`; the queue uses the new one.")
@click.option("--verify", is_flag=True,
              help="Also hash the whole media and compare with the hashes stored in the E01.")
@click.option("--no-pictures", is_flag=True,
              help="Hash and match only: no picture decoding, perceptual hashes or thumbnails.")
@click.option("--sha256", is_flag=True, help="Compute SHA-256 too (MD5 and SHA-1 always).")
@click.option("--no-carve", is_flag=True,
              help="Do not carve free and unpartitioned space for pictures and videos (each "
                   "volume's free space then stays a coverage gap).")
@_key_options
@click.option("--allow-plaintext-key", is_flag=True,
              help="With --address: send --recovery-key/--password to the cluster's workers "
                   "even though Ray's TLS is off (refused by default: anyone on that network "
                   "could read them).")
@click.option("--task-timeout", default=300.0, show_default=True, type=click.FloatRange(1),
              help="Seconds a batch may take (plus 1 s per 2 MB) before it is retried.")
@click.option("--batch-files", default=256, show_default=True, type=click.IntRange(1),
              help="Files per batch of pictures, videos and archives; other files go 32 "
                   "times as many to a batch (they are only hashed). Batches also stop at 64 MB. "
                   "Smaller batches spread a small device over more workers; --resume needs "
                   "the same value.")
@click.option("--dashboard", is_flag=True, help="Start Ray's dashboard on 127.0.0.1 (off by default).")
@click.option("--nice", "niceness", default=10, show_default=True, type=click.IntRange(0, 19),
              help="CPU priority of the scan and its local workers (as nice(1)): the review "
                   "service and the desktop stay responsive while a scan runs; an idle machine "
                   "loses nothing. 0: the scan competes as an equal.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display or flag lines; summary only.")
@output_format("table", "json")
@_video_options
@click.argument("evidence", nargs=-1, required=True, type=click.Path())
def scan(case_dir, case_ref, hashset_args, store_root, context_file, model, model_precision,
         model_first_stage, mode,
         stop_after, address,
         workers, resume, replace, verify, no_pictures, sha256, no_carve, recovery_key,
         password, allow_plaintext_key, task_timeout,
         batch_files, dashboard, niceness, quiet, fmt, evidence, video):
    """Scan seized devices: hash every file once, match against hash sets, raise flags.

    One device per EVIDENCE argument (an E01 set or a split raw set is one device: name its
    first segment). Flags (KNOWN_MATCH, NEAR_MATCH, NOT_EXAMINED, ...) are written to the case
    and to CASE_DIR/flags.jsonl the moment they are found; follow them with `triage flags
    --follow`. A device that cannot be opened is recorded as not examined and the others go on.
    Ctrl-C stops cleanly; `--resume` continues.

    \b
    Example:
      triage scan --case case1 --hashset caid.json --hashset nsrl --context ctx.csv \\
          /evidence/laptop.E01 /evidence/phone.dd
      triage scan --case case1 --resume /evidence/laptop.E01 /evidence/phone.dd
    """
    import time as _time

    from triage.units import terminal_safe
    from workers.runtime import lower_priority
    from workers.scan import prepare_scan, run_scan

    as_json = fmt == "json"
    t0 = _time.time()
    for path in evidence:
        if not Path(path).exists():
            raise TriageError(f"no such file: {path}")
    lower_priority(niceness)        # before Ray starts, so its local processes inherit it
    opts, hashsets = prepare_scan(case_dir, hashset_args=hashset_args, store_root=store_root,
                                  model=model, model_precision=model_precision,
                                  model_first_stage=model_first_stage, mode=mode,
                                  stop_after=stop_after,
                                  pictures=not no_pictures, sha256=sha256,
                                  task_timeout=task_timeout, batch_files=batch_files,
                                  carve=not no_carve, **video)
    if not as_json:
        for line in _rejected_lines(hashsets):
            click.echo(line, err=True)
    quiet = quiet or as_json
    reporter = None
    if not quiet:
        from workers.progress import RichReporter
        reporter = RichReporter(model=model != "none")
    # Ray's driver prints worker-failure notices to stdout; keep stdout for the summary
    import contextlib as _contextlib
    try:
        with _contextlib.redirect_stdout(sys.stderr):
            summary = _run_scan_with(reporter, run_scan, case_dir, evidence, opts, hashsets,
                                     context_file, address, workers, resume, verify, dashboard,
                                     recovery_key, password, allow_plaintext_key, t0, replace,
                                     case_ref)
    except KeyboardInterrupt as exc:
        from workers.runtime import interrupt_exit_code
        click.echo(f"interrupted: everything found so far is in {case_dir}; continue with "
                   "`triage scan --resume` and the same arguments", err=True)
        sys.exit(interrupt_exit_code(exc))
    if as_json:
        _echo_json(summary.to_dict())
        if summary.status == "failed":
            sys.exit(2)
        return
    for w in summary.warnings:
        click.echo(f"warning: {terminal_safe(w)}", err=True)
    if summary.status == "failed":
        click.echo(f"error: no device could be examined ({len(summary.devices)} failed); "
                   f"see {_prog()} show --case {case_dir} DEVICE", err=True)
        sys.exit(2)
    from triage import views

    console = _console()        # wraps at the terminal's width (80 columns when piped)
    for d in summary.devices:
        stop = ", stopped early (triage mode)" if d["stopped_early"] else ""
        status = views.status_text(d["status"], [d])
        scored = (f", {d['scored']} scored by the model ({d['model_skipped']} skipped: "
                  f"see {_prog()} show)" if model != "none" else "")
        console.print(f"{terminal_safe(d['device'])}: {status}{stop}; {d['files']} files, "
                      f"{d['pictures']} pictures, {d['alert_matches']} alert matches, "
                      f"{d['near_matches']} near, {d['flags']} flags{scored}", markup=False)
    console.print(f"scan {views.status_text(summary.status, summary.devices)} in "
                  f"{summary.seconds:.1f} s", markup=False)
    click.echo(f"next: {_prog()} queue --case {_shell_word(case_dir)}")   # whole, to copy


def _prog() -> str:
    """How to run triage again, for hints: `triage` when that name is on PATH (`make demo`
    puts it there), else the path this one was started by (`.venv/bin/triage`)."""
    import shutil

    me = sys.argv[0] if sys.argv else ""
    if shutil.which("triage") or not me.endswith("triage"):
        return "triage"
    return _shell_word(me)


def _shell_word(text: str) -> str:
    import shlex
    return shlex.quote(str(text))


def _rejected_lines(hashsets: list[dict]) -> list[str]:
    """As `hashset import` prints them: each set file's rejected records, with the first few."""
    from triage.units import terminal_safe

    out = []
    for h in hashsets:
        if h.get("rejected"):
            out.append(f"warning: {terminal_safe(h.get('source_name') or h.get('name'))}: "
                       f"rejected {h['rejected']:,} records, e.g.:")
            out.extend(f"    {terminal_safe(ex)}" for ex in h.get("rejected_examples", [])[:5])
    return out


def _run_scan_with(reporter, run_scan, case_dir, evidence, opts, hashsets, context_file, address,
                   workers, resume, verify, dashboard, recovery_key, password,
                   allow_plaintext_key, t0, replace, case_ref):
    kwargs = dict(hashsets=hashsets, context_file=context_file, address=address, workers=workers,
                  resume=resume, verify=verify, dashboard=dashboard, recovery_key=recovery_key,
                  password=password, allow_plaintext_key=allow_plaintext_key, t0=t0,
                  replace=replace, case_ref=case_ref)
    if reporter is None:
        return run_scan(case_dir, list(evidence), opts, **kwargs)
    with reporter:
        return run_scan(case_dir, list(evidence), opts, reporter=reporter, **kwargs)


# --- queue, show, flags, context, export, report (triage/rank.py, flags.py, exports/) ---

_CASE_OPTION = click.option("--case", "case_dir", required=True, type=click.Path(file_okay=False),
                            callback=_remember_case, help="Case directory made by `triage scan`.")


FLAG_CODES = ("CHILD_ACCESS", "SELF_PRODUCED", "KNOWN_MATCH", "SUSPECTED_NEW", "NEAR_MATCH",
              "NOT_EXAMINED")         # triage.flags.CODES, not imported: `--help` stays fast
QUEUE_STATUSES = ("complete", "partial", "failed")


def _open_case(case_dir):
    from triage.store import CaseStore

    return CaseStore(case_dir, create=False)


def _graded_counts(case_dir) -> dict:
    """device id -> graded findings, from the case's review file (none before any review)."""
    from triage.review.casereview import open_review

    review = open_review(case_dir)
    if review is None:
        return {}
    with review:
        return review.graded_counts()


@main.command()
@_CASE_OPTION
@output_format("table", "json", "jsonl", "csv")
@click.option("--flag", "flag_codes", multiple=True, metavar="CODE",
              type=click.Choice(FLAG_CODES, case_sensitive=False),
              help="Only devices with this flag (repeat for any of several).")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              type=click.Choice(QUEUE_STATUSES, case_sensitive=False),
              help="Only devices in this state: " + ", ".join(QUEUE_STATUSES) + ".")
@click.option("--deadline-before", default=None, metavar="DATE",
              help="Only devices whose custody deadline is before DATE (2026-12-20).")
@click.option("--limit", default=None, type=click.IntRange(1), metavar="N",
              help="Only the first N devices of the queue.")
def queue(case_dir, fmt, flag_codes, statuses, deadline_before, limit):
    """The devices of a case in the order to examine them, with the reasons.

    \b
    Devices with exact alert matches come first, then near matches, then pictures only the
    model suspects, then devices that could not be fully examined, then clean ones. Within a band,
    points from documented rules (category severity, counts, camera-original pictures, the
    suspect's access to children, custody deadline) decide; `triage show DEVICE` lists them.
    While a scan runs, its devices are listed as queued, opening or scanning.

    \b
    Examples:
      triage queue --case CASE_DIR
      triage queue --case CASE_DIR --flag CHILD_ACCESS --limit 3
      triage queue --case CASE_DIR --format json | jq '.[0].reasons'
    """
    from triage import rank, views

    with _open_case(case_dir) as store:
        ordered = rank.select(rank.verdicts(store), flags=flag_codes, statuses=statuses,
                              deadline_before=deadline_before, limit=limit)
    graded = _graded_counts(case_dir)
    rows = views.queue_rows(ordered, graded)
    if fmt == "json":
        _echo_json(rows)
    elif fmt == "jsonl":
        _echo_jsonl(rows)
    elif fmt == "csv":
        click.echo(views.queue_csv(rows), nl=False)
    elif not rows:
        click.echo("no devices in this case match" if (flag_codes or statuses or deadline_before)
                   else "no devices in this case yet")
    else:
        _console().print(views.queue_table(ordered, graded))


def _console(stderr: bool = False, width: int | None = None):
    """A rich console as wide as the terminal (80 columns when not a terminal) whose closed
    pipe ends the command quietly with exit 0 (rich's own exits 1)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            _quiet_closed_pipe()

    stream = sys.stderr if stderr else sys.stdout
    return _Console(file=stream, width=width or (None if stream.isatty() else 80),
                    highlight=False)


@main.command()
@click.argument("device")
@_CASE_OPTION
@output_format("table", "json")
def show(device, case_dir, fmt):
    """One device: its verdict, reasons, scan runs, flags, coverage and every finding with
    provenance.

    DEVICE is the device id shown by `triage queue`, its exhibit reference, or its evidence
    file name (any case). Each finding says how to reach the same bytes again with TSK
    (`icat`). Every scan run of the device is listed with its hash sets, model and counts; the
    queue uses the latest complete one (a re-scan that was interrupted or failed leaves the
    device ranked on the run before it, and says so).
    """
    from triage import rank, views
    from triage.findings import findings
    from triage.review.casereview import open_review

    review = open_review(case_dir)
    grades = review.grades() if review is not None else {}
    if review is not None:
        review.close()
    with _open_case(case_dir) as store:
        dev = rank.find_device(store, device)
        verdict = [v for v in rank.verdicts(store) if v.device_id == dev["id"]][0]
        found = findings(store, dev["id"])
        out = views.device_json(store, dev, verdict, found, grades)
        labels = rank.category_labels(store)
        flags = [f for _i, f in store.flags(dev["id"])]
        runs = store.device_runs(dev["id"])
    if fmt == "json":
        _echo_json(out)
        return
    console = _console()
    console.print(views.device_view(verdict, dev, found, flags, labels, out["model"],
                                    out["accounting"], runs))
    console.print(f"reviewed {out['reviewed']} of {out['reviewed'] + out['unreviewed']} findings "
                  "(graded in `triage serve`)", markup=False)


@main.command("flags")
@_CASE_OPTION
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new flags as a running scan raises them; ends when that scan "
                   "ends (Ctrl-C ends sooner).")
@output_format("table", "json", "jsonl")
@click.option("--code", "codes", multiple=True, metavar="CODE",
              type=click.Choice(FLAG_CODES, case_sensitive=False),
              help="Only flags with this code (repeat for several).")
@click.option("--device", default=None, help="Only this device's flags.")
@click.option("--since", default=None, metavar="TIME",
              help="Only flags raised at or after TIME (2026-12-03T12:00Z; no zone is UTC).")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(0.05, 60),
              help="Seconds between looks at the case store with --follow.")
def flags_cmd(case_dir, follow, fmt, codes, device, since, interval):
    """Safeguarding flags raised so far, oldest first; --follow while a scan runs.

    \b
    KNOWN_MATCH    exact alert match        NEAR_MATCH     perceptual alert match
    SUSPECTED_NEW  model suspects new       SELF_PRODUCED  camera-original picture
    CHILD_ACCESS   once per device: its findings, when the suspect has access to
                   children (the highest severity)
    NOT_EXAMINED   part of the device could not be examined

    \b
    Examples:
      triage flags --case CASE_DIR --code CHILD_ACCESS
      triage flags --case CASE_DIR --since 2026-12-03T09:00 --format jsonl
      triage flags --case CASE_DIR --follow     # while a scan runs in another terminal
    """
    import time as _time
    from dataclasses import asdict

    from triage import views
    from triage.flags import ended_text, follow_store, format_flag_line
    from triage.output import parse_time

    since_t = parse_time(since) if since else None
    codes = tuple(c.upper() for c in codes)
    console = _console()
    after_run = None
    if follow:
        from triage.store import is_case

        if not is_case(case_dir):
            after_run = 0               # the scan that creates the case is the one followed
            # started before the scan: wait for the scan to create the case
            click.echo(f"waiting for a scan to create {case_dir} (Ctrl-C ends)", err=True)
            try:
                while not is_case(case_dir):
                    _time.sleep(interval)
            except KeyboardInterrupt:
                return
    with _open_case(case_dir) as store:
        dev_id = None
        if device:
            from triage import rank

            dev_id = rank.find_device(store, device)["id"]

        def emit(batch, table_ok):
            if fmt == "json" and table_ok:
                _echo_json([asdict(f) for _i, f in batch])
            elif fmt in ("json", "jsonl"):      # following: one object per line as they come
                _echo_jsonl(asdict(f) for _i, f in batch)
            elif table_ok:
                console.print(views.flags_table(batch))
            else:
                for _i, f in batch:
                    console.print(format_flag_line(f), style=views._FLAG_STYLE.get(f.code),
                                  markup=False)
            sys.stdout.flush()

        if not follow:
            batch = [(i, f) for i, f in store.flags(dev_id)
                     if (not codes or f.code in codes) and (since_t is None or f.raised_at >= since_t)]
            if batch:
                emit(batch, True)
            elif fmt == "json":
                _echo_json([])
            elif fmt == "table":
                click.echo("no flags raised" + (" that match" if codes or since_t else ""))
            return
        if after_run is None and store.running_run() is None:
            click.echo("no scan is running in this case: following the next one (Ctrl-C "
                       "ends)", err=True)
        try:
            for what, item in follow_store(store, dev_id, interval=interval, since=since_t,
                                           codes=codes, after_run=after_run):
                if what == "flags":
                    emit(item, False)
                else:
                    click.echo(ended_text(item), err=True)
                    return
        except KeyboardInterrupt:
            return


@main.group()
def context():
    """Case context: exhibit references, suspects' access to children, custody deadlines.

    \b
    A CSV (or JSON) with one row per device and the columns
      evidence, exhibit, suspect, access_to_children, custody_deadline, notes
    access_to_children is one of none, lives_with, works_with, other, unknown (blank means
    unknown, which ranks as a reason to ask, not as none).
    """


@context.command("set")
@_CASE_OPTION
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--case-ref", default=None, metavar="REF",
              help="The case reference (crime or job number): the report's title, VICS "
                   "CaseNumber and the CASE export's name. Default: the case folder's name.")
@output_format("table", "json")
def context_set(case_dir, file, case_ref, fmt):
    """Attach a context FILE to the devices of a case (rows match by evidence path or name),
    and/or set the case reference.

    \b
    Examples:
      triage context set --case CASE_DIR context.csv
      triage context set --case CASE_DIR --case-ref OP-ELM/2026/0042
    """
    from triage.context import attach_context, load_context

    if file is None and case_ref is None:
        raise click.UsageError("give a context FILE, --case-ref REF, or both")
    result: dict = {}
    with _open_case(case_dir) as store:
        if case_ref is not None:
            store.set_case_ref(case_ref)
            result["case_ref"] = store.case_ref()
        if file is not None:
            result.update(attach_context(store, load_context(file)))
    if fmt == "json":
        _echo_json(result)
        return
    from triage.units import terminal_safe

    if "case_ref" in result:
        click.echo(f"case reference: {terminal_safe(result['case_ref'])}")
    for dev_id, exhibit in result.get("matched", {}).items():
        click.echo(f"{terminal_safe(dev_id)}: context set ({terminal_safe(exhibit or 'no exhibit')})")
    for dev_id in result.get("devices_without_context", []):
        click.echo(f"warning: no context row for device {terminal_safe(dev_id)}", err=True)
    for ev in result.get("rows_without_device", []):
        click.echo(f"warning: context row {terminal_safe(ev)} matches no device in this case",
                   err=True)


@context.command("show")
@_CASE_OPTION
@output_format("table", "json", "jsonl", "csv", default="table")
def context_show(case_dir, fmt):
    """Print the case reference and each device's context: a table for people, or JSON,
    JSON lines or CSV for scripts.

    \b
    Example:
      triage context show --case case --format csv > context-now.csv
    """
    with _open_case(case_dir) as store:
        rows = [{"device": d["id"], **d["context"]} for d in store.devices()]
        ref = store.case_ref()
    if fmt == "table":
        from rich.table import Table
        from rich.text import Text

        from triage.units import terminal_safe

        def cell(value) -> Text:
            # from a context file: escaped like any string from evidence, and never markup
            return Text(terminal_safe("" if value is None else str(value)))

        # one row per field (a device's context has a dozen): readable in 80 columns
        table = Table(title=Text(f"case reference: {terminal_safe(ref or 'none')}"))
        for col in ("device", "field", "value"):
            table.add_column(col, overflow="fold")
        for r in rows:
            fields = [(k, v) for k, v in r.items() if k != "device"] or [("", "")]
            for i, (k, v) in enumerate(fields):
                table.add_row(cell(r["device"]) if i == 0 else "", cell(k), cell(v),
                              end_section=i == len(fields) - 1)
        _console().print(table)
        if not any(len(r) > 1 for r in rows):
            click.echo(f"next: {_prog()} context set --case {_shell_word(str(case_dir))} "
                       "CONTEXT.csv", err=True)
    elif fmt == "json":
        _echo_json({"case_ref": ref, "devices": {r.pop("device"): r for r in rows}})
    elif fmt == "jsonl":
        _echo_jsonl(rows)
    else:
        from triage.units import SafeDictWriter

        fields = list(dict.fromkeys(k for r in rows for k in r)) or ["device"]
        writer = SafeDictWriter(sys.stdout, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@main.command()
@_CASE_OPTION
@click.option("--format", "fmt", required=True,
              type=click.Choice(["vics", "case", "csv", "dfxml", "vpdq"]),
              help="vics: VICS 2.0 JSON for Griffeye/AXIOM; case: CASE/UCO JSON-LD; "
                   "csv: the matches; dfxml: the file listing; vpdq: matched and suspected "
                   "videos' frame hashes.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="File to write (mode 0600: it names possibly illicit files); - for stdout.")
@click.option("--device", default=None, help="Only this device.")
def export(case_dir, fmt, out, device):
    """Export a case for the tools forces already use.

    \b
    vics   VICS 2.0 #Cases JSON: Media (MD5, SHA1, Category, MediaSize) and MediaFiles
           (path, deleted, times, exhibit, provenance) of matched and suspected pictures,
           so grading continues in Griffeye Analyze or Magnet AXIOM.
    case   CASE/UCO JSON-LD: files, hashes, the scan as an InvestigativeAction and the
           matches as analytic results (passes case_validate).
    csv    one line per match, with provenance.
    dfxml  every file of the case as DFXML fileobjects (can be large).
    vpdq   the vPDQ records (frame,pdq,quality,seconds) of matched and suspected videos,
           one `# video: NAME` block each, for ThreatExchange-compatible systems;
           `triage hashset import` reads the file back as a vPDQ set.
    """
    from triage import exports

    with _open_case(case_dir) as store:
        dev_id = None
        if device:
            from triage import rank

            dev_id = rank.find_device(store, device)["id"]
        with _out_file(case_dir, out) as path:
            summary = exports.export(store, fmt, path, device_id=dev_id)
    from triage.review.casereview import CaseReview

    target = "standard output" if out == "-" else str(Path(out).resolve())
    with CaseReview(case_dir) as review:       # an export of a case is an audit event
        review.audit.append(_operator(), "export", target,
                            {"format": fmt, "device": dev_id, "summary": summary})
    click.echo(f"wrote {out if out != '-' else 'standard output'}: {summary}",
               err=out == "-")


@main.command()
@_CASE_OPTION
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="HTML file to write (mode 0600); - for stdout.")
@click.option("--no-thumbnails", is_flag=True,
              help="Leave every picture out of the report.")
@click.option("--clear-thumbnails", is_flag=True,
              help="Show thumbnails unblurred, in colour (default: blurred and greyscale).")
def report(case_dir, out, no_thumbnails, clear_thumbnails):
    """Write a self-contained HTML report of the case for reading and sharing.

    The queue, each device's reasons, flags, coverage and findings, and charts of findings
    per device. Nothing in it loads from the network. Thumbnails are blurred and greyscale by default, to spare whoever reads it; the
    examiner reviews the real pictures in their review tool.
    """
    from triage.exports.report_html import write_report

    if no_thumbnails and clear_thumbnails:
        raise click.UsageError("--no-thumbnails and --clear-thumbnails exclude each other")
    with _open_case(case_dir) as store, _out_file(case_dir, out) as path:
        write_report(store, path, thumbnails="none" if no_thumbnails else
                     ("clear" if clear_thumbnails else "blurred"))
    if out != "-":
        click.echo(out)


def _out_file(case_dir, out):
    """`--out FILE` as a path to write; `--out -` writes a private temporary file in the case
    (the library writes files, mode 0600) and copies it to standard output."""
    import contextlib
    import os
    import shutil
    import tempfile

    @contextlib.contextmanager
    def path():
        if out != "-":
            yield out
            return
        fd, tmp = tempfile.mkstemp(prefix=".out-", dir=case_dir)
        os.close(fd)
        try:
            yield tmp
            sys.stdout.flush()
            with open(tmp, "rb") as fh:
                shutil.copyfileobj(fh, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        finally:
            os.unlink(tmp)
    return path()


# --- review service: users, serve, audit (triage/review/) ---

def _operator() -> str:
    """Who ran a command, for the audit log: the login name, marked as a command-line change."""
    import getpass

    try:
        return f"{getpass.getuser()} (command line)"
    except Exception:       # no login name in a container: still say where it came from
        return "unknown (command line)"


def _users_db():
    from triage.review.users import UserDB

    return UserDB()


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("password", hide_input=True, confirmation_prompt=True, err=True)


@main.group()
def users():
    """Reviewers of `triage serve`: investigator, examiner or supervisor.

    \b
    investigator  works the queue and grades findings; sees blurred pictures only
    examiner      also reveals a clear picture, giving a reason each time (audited)
    supervisor    all of that, and reads the audit log
    Users live in $TRIAGE_HOME/users.db (mode 0600, TRIAGE_HOME=~/.triage); every change is an
    audit event.

    \b
    Examples:
      triage users add asmith --role examiner
      printf '%s\\n' "$PW" | triage users add jdoe --role investigator --password-stdin
      triage users list
    """


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["investigator", "examiner", "supervisor"]),
              help="What the user may do (see `triage users --help`).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_add(name, role, password_stdin):
    """Add user NAME with a password (asked twice unless --password-stdin)."""
    password = _read_password(password_stdin)
    with _users_db() as db:
        db.add(name, role, password, actor=_operator())
        click.echo(f"added {name} ({role}) to {db.path}")


@users.command("list")
@output_format("table", "json", "jsonl")
def users_list(fmt):
    """List users and their roles."""
    from triage.output import table_time

    with _users_db() as db:
        rows = db.list()
    if fmt != "table":
        _echo_json(rows) if fmt == "json" else _echo_jsonl(rows)
        return
    if not rows:
        click.echo("no users yet; add one with `triage users add NAME --role supervisor`")
    for r in rows:
        click.echo(f"{r['name']:<24} {r['role']:<13} added {table_time(r['created'])}")


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_passwd(name, password_stdin):
    """Set a new password for NAME."""
    password = _read_password(password_stdin)
    with _users_db() as db:
        db.passwd(name, password, actor=_operator())
    click.echo(f"password of {name} changed")


@users.command("remove")
@click.argument("name")
def users_remove(name):
    """Remove NAME; sessions of that user end at their next request."""
    with _users_db() as db:
        db.remove(name, actor=_operator())
    click.echo(f"removed {name}")


@main.command()
@click.option("--case", "cases", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Case directory to serve; repeat for several.")
@click.option("--cases", "roots", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Serve every case directory directly under this folder.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --cert/--key or --insecure-http.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option("--cert", default=None, type=click.Path(dir_okay=False), help="TLS certificate (PEM).")
@click.option("--key", default=None, type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option("--insecure-http", is_flag=True,
              help="Allow plain HTTP on a non-loopback host (prints a warning; not for real use).")
def serve(cases, roots, host, port, cert, key, insecure_http):
    """Serve cases to investigators in a browser: the live queue, devices, blurred findings,
    grading and the audit log.

    \b
    Examples:
      triage users add asmith --role supervisor
      triage serve --case CASE_DIR                      # http://127.0.0.1:8765/
      triage serve --cases /cases --host 0.0.0.0 --cert unit.pem --key unit.key
    """
    from triage.review.cases import case_dirs
    from triage.review.server import serve as _serve

    _serve(case_dirs(list(cases), list(roots)), host=host, port=port, cert=cert, key=key,
           insecure_http=insecure_http, say=lambda text: click.echo(text, err=True))


@main.group()
def audit():
    """The audit trail of `triage serve`: logins, device views, reveals, grades, exports, user
    changes; append-only and hash-chained."""


@audit.command("verify")
@click.option("--case", "cases", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Also verify this case's log (CASE_DIR/review.sqlite); repeat for several.")
@output_format("table", "json")
def audit_verify(cases, fmt):
    """Check each event's hash and link to the one before. Exit 1 when a chain is broken.

    Always checks the service log in $TRIAGE_HOME/users.db (logins, user changes); --case adds
    each case's log (device views, reveals, grades, exports). Note the head hash it prints in
    the case file: a shortened log is still a whole chain, but not with that head.
    """

    from triage.review.casereview import open_review

    logs = []
    with _users_db() as db:
        logs.append(("service", str(db.path), db.audit.verify()))
    for c in cases:
        review = open_review(c)
        if review is None:
            logs.append((c, c, (0, "0" * 64, [])))
            continue
        with review:
            logs.append((c, str(review.path), review.audit.verify()))
    as_json = fmt == "json"
    broken = False
    out = []
    for name, path, (n, head, problems) in logs:
        broken = broken or bool(problems)
        out.append({"log": name, "path": path, "events": n, "head": head, "ok": not problems,
                    "problems": problems})
        if not as_json:
            if problems:
                click.echo(f"BROKEN {path}: {n} events, {len(problems)} problem(s)")
                for p in problems:
                    click.echo(f"  {p}")
            else:
                click.echo(f"ok {path}: {n} events, head {head}")
    if as_json:
        _echo_json(out)
    if broken:
        sys.exit(1)


def run() -> None:
    """The installed `triage` command: `main`, then a prompt exit.

    Everything a command leaves to clean up runs first (atexit handlers: temporary folders,
    Ray's own shutdown hook, logging); only the interpreter's teardown of every loaded module
    (Ray, numpy, Pillow, pytsk3: about 0.17 s) is skipped. `main` itself stays importable and
    normal for tests and for `python -m`."""
    import atexit
    import os
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):      # a closed pipe: nothing more can be said there
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
