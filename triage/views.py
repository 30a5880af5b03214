"""Terminal views of the queue, one device, and flags (rich), plus the queue as CSV.

Pure formatting: everything shown comes from `triage.rank`, `triage.findings` and the store.
Tables are laid out for an 80-column terminal; long text wraps inside its cell.
"""
from __future__ import annotations

import io
import os
import time
from typing import Iterable, Optional

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from triage.classify import category_label, category_text, score_text
from triage.extractions import reach_hint
from triage.findings import Finding
from triage.flags import SEVERITY, display_path
from triage.records import DeviceVerdict, Flag
from triage.output import iso_time, table_time
from triage.units import SafeDictWriter, human_bytes, terminal_safe, volume_name


def _safe(text) -> Text:
    """A string that may come from evidence, hash sets or context files, as inert text: never
    parsed as markup, control and bidi characters shown escaped."""
    return Text(terminal_safe(str(text)))

_COVERAGE_STYLE = {"complete": "green", "partial": "yellow", "failed": "bold red"}
_FLAG_STYLE = {"CHILD_ACCESS": "bold white on red", "SELF_PRODUCED": "bold red",
               "KNOWN_MATCH": "red", "SUSPECTED_NEW": "magenta", "NEAR_MATCH": "yellow",
               "NOT_EXAMINED": "cyan"}
QUEUE_CSV_FIELDS = ("rank", "device", "exhibit", "evidence", "score", "alert_matches",
                    "near_matches", "suspected_new", "flags", "coverage", "access_to_children",
                    "custody_deadline", "reviewed", "unreviewed", "reasons")


def queue_table(verdicts: list[DeviceVerdict], graded: Optional[dict] = None) -> Group:
    """A compact table (fits 80 columns), then each device's flags, review count and reasons
    below it. `graded`: device id -> graded findings (from `triage serve`)."""
    from rich import box

    table = Table(title="Examination queue (1 = examine first)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, caption_justify="left",
                  caption="Order: exact, then near, then model-suspected, then not fully examined, "
                          "then clean; score orders within each.")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("device", overflow="fold", max_width=22)
    table.add_column("exhibit", overflow="fold", max_width=12)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("exact", justify="right", no_wrap=True)
    table.add_column("near", justify="right", no_wrap=True)
    table.add_column("new", justify="right", no_wrap=True)
    table.add_column("coverage", no_wrap=True)
    for v in verdicts:
        table.add_row(str(v.rank), _safe(v.device_id), _safe(v.exhibit or "-"), f"{v.score:g}",
                      str(v.alert_matches), str(v.near_matches), str(v.suspected_new),
                      Text(v.coverage, style=_COVERAGE_STYLE.get(v.coverage, "")))
    parts: list = [table]
    for v in verdicts:
        head = Text(f"{v.rank}. {terminal_safe(v.device_id)}", style="bold")
        # the review count before the flags: on a narrow terminal the flags wrap, not the count
        counts = review_counts(v, (graded or {}).get(v.device_id, 0))
        if counts["reviewed"]:
            head.append(f"  reviewed {counts['reviewed']}/{counts['reviewed'] + counts['unreviewed']}",
                        style="dim")
        codes = sorted(v.flags, key=lambda c: -SEVERITY.get(c, 0))
        for code in codes:
            head.append("  ")
            head.append(code, style=_FLAG_STYLE.get(code, ""))
        parts.append(head)
        parts.append(bullets(v.reasons, 2))
    return Group(*parts)


def bullets(lines, indent: int = 2) -> Table:
    """A bullet list whose wrapped lines hang under their text, not under the bullet."""
    grid = Table.grid(padding=(0, 1), pad_edge=False)
    grid.add_column(width=indent + 1, justify="right", no_wrap=True)
    grid.add_column(overflow="fold", ratio=1)
    for line in lines:
        grid.add_row("-", _safe(line))
    return grid


def queue_csv(rows: list[dict]) -> str:
    """The queue as CSV, one device per line; lists are joined with ' | '."""
    buf = io.StringIO()
    writer = SafeDictWriter(buf, fieldnames=QUEUE_CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        ctx = row.get("context") or {}
        writer.writerow(dict(row, evidence=" | ".join(row["evidence"]),
                             flags=" ".join(row["flags"]), reasons=" | ".join(row["reasons"]),
                             access_to_children=ctx.get("access_to_children", ""),
                             custody_deadline=ctx.get("custody_deadline") or ""))
    return buf.getvalue()


def _when(t: Optional[float]) -> str:
    return table_time(t)


def status_text(status: str, devices: list[dict]) -> str:
    """A scan's or a device's status for people: "complete with gaps" when every device was
    scanned to its end but some parts could not be examined (a locked volume, an unreadable
    file: `triage show` lists them), instead of a bare "partial"."""
    ended = all(d["status"] in ("complete", "partial") for d in devices)
    if status == "partial" and ended:
        return "complete with gaps"
    return status


def run_line(r: dict) -> str:
    """One scan run of a device for `show`: when, status, hash sets (name and version), model
    and what it found."""
    sets = ", ".join(f"{h.get('name')} {h.get('version', '')}".strip() + f" ({h.get('role')})"
                     for h in r.get("hashsets") or []) or "no hash sets"
    model = (r.get("model") or {}).get("name") or "none"
    c = r.get("counts") or {}
    found = (f"; {c.get('files', 0)} files, {c.get('alert_matches', 0)} alert matches, "
             f"{c.get('near_matches', 0)} near, {c.get('flags', 0)} flags" if c else "")
    used = (" (used by the queue)" if r.get("ranked") else
            " (archived)" if not r.get("live") else " (cut off: not used by the queue)")
    return (f"run {r['run_id']}{used}: {_when(r.get('started'))}, {r.get('status')}; "
            f"sets {sets}; model {model}{found}")


def run_json(r: dict) -> dict:
    """A device's run for `show --json`."""
    return {"run": r["run_id"], "live": bool(r.get("live")), "ranked": bool(r.get("ranked")),
            "status": r.get("status"),
            "started": iso_time(r.get("started")), "finished": iso_time(r.get("finished")),
            "hashsets": [{k: h.get(k) for k in ("name", "version", "role")}
                         for h in r.get("hashsets") or []],
            "model": None if not r.get("model") else {k: r["model"].get(k)
                                                      for k in ("name", "version", "sha256")},
            "tool_version": r.get("tool_version"), "operator": r.get("operator"),
            "counts": r.get("counts") or {}}


def finding_dict(f: Finding, image: Iterable[str] = (), labels: Optional[dict] = None) -> dict:
    """A finding with its full provenance, for `show --json` and the report. `image`: the
    device's evidence paths, for the icat line (IMAGE when not known); `labels`: the case's
    category labels (rank.category_labels), for `category_label` beside each raw category."""
    rec = f.record
    return {
        "key": f.key, "kind": f.kind, "path": rec.path, "name": rec.name, "size": rec.size,
        "deleted": f.deleted, "type": f.features.type or rec.type,
        "category": f.category,
        "category_label": category_label(labels, f.top.set_name, f.category) if f.top else "",
        "provenance": f.provenance(),
        "icat": _icat_hint(f, image),
        "times": {k: getattr(rec, k) for k in ("mtime", "atime", "ctime", "crtime")},
        "matches": [_match_dict(m, labels) for m in f.matches],
        "scores": [{"model": s.model, "model_sha256": s.model_sha256, "values": s.values,
                    **({"frames": [{"frame": n, "seconds": t, "values": v}
                                   for n, t, v in s.frames]} if s.frames else {})}
                   for s in f.scores],
        "camera_indicators": list(f.indicators),
        **({"video": {"duration": f.features.duration,
                      "examined_seconds": f.features.examined_seconds,
                      "frames_hashed": len(f.features.frames),
                      "frames": [{"frame": n, "seconds": t} for n, t in f.frames]}}
           if f.is_video else {}),
    }


def _match_dict(m, labels: Optional[dict] = None) -> dict:
    d = {"kind": m.kind, "set": m.set_name, "version": m.set_version, "category": m.category,
         "category_label": category_label(labels, m.set_name, m.category), "severity": m.severity, "algorithm": m.algorithm, "value": m.value,
         "distance": m.distance}
    if m.frames:
        d["frames"] = [{"frame": n, "seconds": t} for n, t in m.frames]
    if m.algorithm == "vpdq":
        d.update(known_video=m.value, query_share=m.query_share, known_share=m.known_share)
    return d


def _icat_hint(f: Finding, image: Iterable[str] = ()) -> str:
    """How to reach the same bytes with TSK, for the examiner's notes: the real evidence path
    (every segment of a split raw set, as icat takes them) and the volume's offset in sectors."""
    import shlex

    p = f.record.prov
    paths = list(image)
    if f.record.fs_type == "directory" and paths and p.parent is None:   # logical files
        return "cat -- " + shlex.quote(os.path.join(paths[0], p.path.lstrip("/")))
    first = shlex.quote(paths[0]) if paths else "IMAGE"
    if p.carved:              # the byte range itself
        start = (p.parent.volume_offset or 0) + p.offset
        span = f"bs=1M skip={start} count={p.length}"
        return (f"dd if={first} iflag=skip_bytes,count_bytes {span}  (E01 and other "
                f"containers: img_cat {first} | dd iflag=skip_bytes,count_bytes,fullblock {span})")
    # E01 and VMDK sets are found from the first segment; split raw needs every segment
    image_args = " ".join(shlex.quote(x) for x in paths) if len(paths) > 1 and \
        not paths[0].lower().endswith((".e01", ".ex01")) else first
    if p.parent is not None and p.parent.inode is not None:
        # inside a file: the file's bytes, then the range (and the filter that decodes it);
        # inside a member of an extraction, that member's size is not at hand: no hint
        if reach_hint(p.parent, 0) is not None:
            return ""
        outer = _icat_hint_of(p.parent, image_args, first)
        span = f"dd iflag=skip_bytes,count_bytes bs=1M skip={p.offset} count={p.length}"
        return f"{outer} | {span}" + (f"  (then {p.decoded})" if p.decoded else "")
    return _icat_hint_of(p, image_args, first, f.record.size)


def _icat_hint_of(p, image_args: str = "IMAGE", first: str = "IMAGE",
                  size: Optional[int] = None) -> str:
    member = reach_hint(p, size)      # a member of a phone extraction
    if member is not None:
        return member.replace("IMAGE", first).replace("BACKUP/", f"{first}/")
    if p.inode is None:
        return ""
    inode = f"{p.inode}-{p.attr_type}-{p.attr_id}" if p.ads else str(p.inode)
    hint = f"icat -o {p.volume_offset // 512} {image_args} {inode}"
    return hint + (f"  (then open member {p.member})" if p.member else "")


def coverage_lines(acc: dict) -> list[str]:
    """`triage show`'s coverage section: examined/total per volume, then each gap kind."""
    out = [f"device: {human_bytes(acc['examined'])} of {human_bytes(acc['total'])} examined"]
    for v in acc["volumes"]:
        name = volume_name(v["index"], v["encryption"] or v["fs_type"], v["total"], v["offset"])
        line = f"{name}: {human_bytes(v['examined'])} examined"
        gaps = [f"{kind} {human_bytes(k['bytes'])}" + (f" ({k['count']})" if k["count"] > 1 else "")
                for kind, k in v["not_examined"].items()]
        out.append(line + ("; not examined: " + "; ".join(gaps) if gaps else ""))
    for kind, k in acc["device"].items():
        size = f" {human_bytes(k['bytes'])}" if k["bytes"] else ""
        out.append(f"device-wide: {kind}{size}")
    return out


def device_view(v: DeviceVerdict, device: dict, found: list[Finding],
                flags: list[Flag], labels: Optional[dict] = None,
                model: Optional[dict] = None, accounting: Optional[dict] = None,
                runs: Optional[list] = None) -> Group:
    """`triage show`: verdict, reasons, points, flags, coverage and the findings. `model`:
    {"scored": n, "skipped": {reason: n}} of the model stage, when one ran."""
    head = Text()
    head.append(terminal_safe(v.device_id), style="bold")
    head.append(f"  rank {v.rank}  score {v.score:g}  coverage ")
    head.append(v.coverage, style=_COVERAGE_STYLE.get(v.coverage, ""))
    lines: list = [head]
    ctx = v.context or {}
    info = Table.grid(padding=(0, 2))
    info.add_column(style="dim")
    info.add_column(overflow="fold")
    info.add_row("evidence", _safe("\n".join(v.evidence) or "-"))
    info.add_row("exhibit", _safe(v.exhibit or "-"))
    info.add_row("suspect", _safe(ctx.get("suspect") or "-"))
    info.add_row("access", _safe(ctx.get("access_to_children") or "unknown"))
    info.add_row("deadline", _safe(ctx.get("custody_deadline") or "-"))
    info.add_row("scanned", f"{_when(device.get('started'))} to {_when(device.get('finished'))} "
                            f"({device.get('status', '-')})")
    if device.get("stored_hashes") or device.get("verified_hashes"):
        def hashes(d: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted((d or {}).items())) or "-"
        info.add_row("hashes", _safe(f"stored {hashes(device.get('stored_hashes'))}; "
                                     f"verified {hashes(device.get('verified_hashes'))}"))
    if model and (model.get("scored") or model.get("skipped")):
        skipped = model.get("skipped") or {}
        why = "; ".join(f"{k} {n}" for k, n in skipped.items())
        info.add_row("model", f"{model.get('scored', 0)} pictures scored (a ranking aid), "
                              f"{sum(skipped.values())} not sent" + (f": {why}" if why else ""))
    lines.append(info)
    if runs:
        lines.append(Text("\nScan runs", style="bold"))
        lines.append(bullets([run_line(r) for r in runs], 2))
    lines.append(Text("\nReasons", style="bold"))
    lines.append(bullets(v.reasons, 2))
    if accounting is not None:
        lines.append(Text("\nCoverage (examined / total bytes)", style="bold"))
        lines.append(bullets(coverage_lines(accounting), 2))
    if v.points:
        lines.append(Padding(Text("points: " + ", ".join(f"{k} {p}" for k, p in v.points.items()),
                                  style="dim"), (0, 0, 0, 2)))
    if flags:
        counts: dict[str, int] = {}
        for f in flags:
            counts[f.code] = counts.get(f.code, 0) + 1
        t = Text("\nFlags  ", style="bold")
        for code in sorted(counts, key=lambda c: -SEVERITY.get(c, 0)):
            t.append(f"{code} x{counts[code]}  ", style=_FLAG_STYLE.get(code, ""))
        lines.append(t)
    if found:
        table = Table(title=f"\n{len(found)} findings", title_justify="left", show_lines=True,
                      pad_edge=False)
        table.add_column("kind", no_wrap=True)
        table.add_column("file and provenance", overflow="fold", ratio=1)
        table.add_column("match", overflow="fold", max_width=24)
        for f in found:
            p = f.record.prov
            where = _safe(display_path(p, member=False) + (f" ! {p.member}" if p.member else ""))
            if p.carved:          # no inode: the bytes are reached by their range
                where.append(f"\nCARVED  {f.record.size} B  "
                             f"{_icat_hint(f, v.evidence).split('  (')[0]}",
                             style="dim")
            else:
                where.append(f"\n{'DELETED  ' if f.deleted else ''}inode {p.inode}  volume@"
                             f"{p.volume_offset:,}  {f.record.size:,} bytes", style="dim")
                hint = _icat_hint(f, v.evidence)
                if hint:
                    where.append("\n" + terminal_safe(hint), style="dim")
            where.append(f"\nmd5 {f.features.md5}\nsha1 {f.features.sha1}", style="dim")
            if f.indicators:
                where.append("\ncamera-original: " + terminal_safe("; ".join(f.indicators)),
                             style="red")
            # one line each, every one escaped on its own: the breaks between them are ours,
            # any in a set's name or version are shown escaped
            if f.top:
                m = f.top
                what = [f"{m.set_name} {m.set_version}",
                        (f"{category_text(labels, m.set_name, m.category)} " if m.category
                         else "") + m.algorithm + (f" d={m.distance}" if m.kind != "exact" else "")]
                if m.algorithm == "vpdq":
                    what += [f"video {m.value}", f"{m.query_share:.0f}% / {m.known_share:.0f}%"]
            else:
                what = [f"{s.model}: {score_text(s.values)}" for s in f.scores] + ["(ranking aid)"]
            if f.frames:
                what.append(f"frames at {f.frame_text}")
            table.add_row(f.kind, where, Text("\n".join(terminal_safe(w) for w in what)))
        lines.append(table)
    return Group(*lines)


def flags_table(flags: Iterable[tuple[int, Flag]]) -> Table:
    table = Table(show_lines=False, pad_edge=False)
    table.add_column("UTC time", overflow="fold", max_width=10)
    table.add_column("code", no_wrap=True)
    table.add_column("device", overflow="fold", max_width=16)
    table.add_column("message", overflow="fold", ratio=1)
    for _id, f in flags:
        table.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(f.raised_at)),
                      Text(f.code, style=_FLAG_STYLE.get(f.code, "")), _safe(f.device_id),
                      _safe(f.message))
    return table


# --- JSON of the queue and of one device: `triage queue/show` and the review service share them ---

def review_counts(v: DeviceVerdict, graded: int) -> dict:
    """Reviewed and unreviewed findings of a device: its findings are its exact, near-only and
    suspected files (as `triage.findings` counts them); reviewed ones carry a grade."""
    total = v.alert_matches + v.near_matches + v.suspected_new
    reviewed = min(int(graded), total)
    return {"reviewed": reviewed, "unreviewed": total - reviewed}


def queue_rows(ordered: list[DeviceVerdict], graded: Optional[dict] = None) -> list[dict]:
    """`triage queue --format json`: each verdict's JSON with its review counts.
    `graded`: device id -> graded findings (CaseReview.graded_counts)."""
    from triage.rank import verdict_dict

    graded = graded or {}
    return [dict(verdict_dict(v), **review_counts(v, graded.get(v.device_id, 0)))
            for v in ordered]


def finding_json(f: Finding, grade: Optional[dict] = None, image: Iterable[str] = (),
                 labels: Optional[dict] = None) -> dict:
    """A finding as `show --json` and the review service give it: `finding_dict` plus its
    stable id and its grade (null until graded)."""
    from triage.review.casereview import finding_id

    return dict(finding_dict(f, image, labels), id=finding_id(f.key),
                display_path=display_path(f.record.prov),
                grade=None if grade is None else {k: grade[k] for k in ("grade", "note", "user", "time")})


def device_json(store, device: dict, verdict: DeviceVerdict, found: list[Finding],
                grades: Optional[dict] = None) -> dict:
    """`triage show --json`: the verdict, the device record, model counts, volumes, coverage,
    flags and every finding with its provenance and grade. `grades`: file key -> grade."""
    from dataclasses import asdict

    from triage.rank import verdict_dict

    from triage.rank import category_labels, coverage_accounting

    labels = category_labels(store)
    dev_id = device["id"]
    grades = grades or {}
    model = {"scored": len(store.scores(dev_id)), "skipped": store.model_skips(dev_id)}
    graded = sum(1 for f in found if f.key in grades)
    volumes, coverage = store.volumes(dev_id), store.coverage(dev_id)
    return dict(verdict_dict(verdict), **review_counts(verdict, graded), device_record=device,
                model=model, volumes=[asdict(v) for v in volumes],
                accounting=coverage_accounting(device, volumes, coverage),
                coverage_records=[c.to_dict() for c in coverage],
                flag_records=[asdict(f) for _i, f in store.flags(dev_id)],
                runs=[run_json(r) for r in store.device_runs(dev_id)],
                findings=[finding_json(f, grades.get(f.key), device.get("paths") or (), labels)
                          for f in found])
