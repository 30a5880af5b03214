"""The HTML report: one self-contained file an investigator can open anywhere, offline.

It holds the queue, each device's reasons, points, flags, coverage and findings, and two inline
SVG charts (findings per device, flags per code). Everything is inline: CSS in a <style>, charts
as <svg>, thumbnails as data: URIs. Nothing is loaded from the network, so opening the report
leaks nothing and works on an air-gapped review machine.

Thumbnails are blurred and greyscale by default, made here with Pillow (not with CSS filters, so
the clear picture is never in the file): enough to tell a picture from a screenshot or a
document, not enough to see content. `thumbnails="clear"` keeps them as stored, "none" leaves
them out.
"""
from __future__ import annotations

import base64
import html
import io
import time
from typing import Optional

from triage import __version__
from triage.exports import iso_utc, private_output
from triage.classify import category_text, score_text
from triage.findings import Finding, findings
from triage.flags import SEVERITY, display_path
from triage.rank import category_labels, verdicts
from triage.features.video import STRIP_FRAMES
from triage.units import human_bytes

MAX_FINDINGS_PER_DEVICE = 200
MAX_FLAGS_PER_DEVICE = 200
THUMB_PX = 96
_KIND_COLOUR = {"exact": "#9b1c1c", "near": "#d97706", "suspected": "#6d28d9"}
_FLAG_COLOUR = {"CHILD_ACCESS": "#7f1d1d", "SELF_PRODUCED": "#b91c1c", "KNOWN_MATCH": "#dc2626",
                "SUSPECTED_NEW": "#7c3aed", "NEAR_MATCH": "#d97706", "NOT_EXAMINED": "#0e7490"}
_COVERAGE_COLOUR = {"complete": "#15803d", "partial": "#b45309", "failed": "#b91c1c"}

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#d9e2ec; --bg:#f5f7fa; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0; background: var(--bg); }
header, main { max-width: 1100px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 28px 0 10px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 17px; margin: 0 0 6px; }
.muted { color: var(--muted); }
.notice { background: #fff7e6; border-left: 4px solid #d97706; padding: 8px 12px; margin: 12px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 14px 16px;
        margin: 14px 0; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef2f7; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 6px; margin: 1px 2px 1px 0; border-radius: 3px;
         color: #fff; font-size: 12px; font-weight: 600; white-space: nowrap; }
.cov { font-weight: 600; }
ul.reasons { margin: 6px 0 8px 18px; padding: 0; }
.points { font-size: 13px; color: var(--muted); }
.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px;
        word-break: break-all; }
img.thumb { width: 72px; height: 72px; object-fit: cover; border-radius: 3px; background: #ccd; }
img.strip { height: 48px; width: auto; max-width: 320px; border-radius: 3px; background: #ccd; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.charts figure { margin: 0; flex: 1 1 420px; }
figcaption { font-size: 13px; color: var(--muted); }
a { color: #1d4ed8; }
@media print { body { background: #fff; } .card { break-inside: avoid; } }
"""


def _e(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _badge(code: str) -> str:
    return f'<span class="badge" style="background:{_FLAG_COLOUR.get(code, "#52606d")}">{_e(code)}</span>'


def _anchor(device_id: str) -> str:
    return "dev-" + "".join(c if c.isalnum() else "-" for c in device_id)


def thumbnail_jpeg(data: bytes, mode: str = "blurred", size: int = THUMB_PX,
                   blur: Optional[int] = None, strip: bool = False) -> Optional[bytes]:
    """A stored thumbnail as JPEG bytes of at most `size` px: blurred and greyscale (Gaussian
    radius `blur`, at least 4 px by default) unless mode is "clear". None when it cannot be read.
    `strip`: a video's strip of frames, `size` px high and up to 4 frames wide.
    The report and the review service both show pictures through this one function."""
    if not data or mode == "none":
        return None
    from PIL import Image, ImageFilter

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.thumbnail((4 * size if strip else size, size))
            if mode == "clear":
                img = img.convert("RGB")
            else:
                radius = max(4, size // 12) if blur is None else max(1, int(blur))
                img = img.convert("L").filter(ImageFilter.GaussianBlur(radius))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=70)
    except Exception:   # a damaged thumbnail must not stop the report or the page
        return None
    return buf.getvalue()


def thumbnail_data_uri(data: bytes, mode: str = "blurred", strip: bool = False) -> Optional[str]:
    """A stored thumbnail as a data: URI, blurred and greyscale unless mode is "clear"."""
    jpeg = thumbnail_jpeg(data, mode, strip=strip)
    if jpeg is None:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _bar_chart(rows: list[tuple[str, list[tuple[str, int, str]]]], title: str,
               legend: bool = True) -> str:
    """Horizontal stacked bars as inline SVG: rows of (label, [(part, value, colour)])."""
    label_w, bar_w, row_h = 170, 380, 24
    total_max = max([sum(v for _p, v, _c in parts) for _l, parts in rows] + [1])
    height = row_h * len(rows) + (34 if legend else 12)
    out = [f'<svg role="img" aria-label="{_e(title)}" '
           f'width="{label_w + bar_w + 60}" height="{height}" font-size="12" '
           f'font-family="system-ui, sans-serif">']
    for i, (label, parts) in enumerate(rows):
        y = 6 + i * row_h
        short = label if len(label) <= 24 else label[:23] + "\u2026"
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(short)}</text>')
        x = label_w
        for part, value, colour in parts:
            if value <= 0:
                continue
            w = max(2, round(bar_w * value / total_max))
            out.append(f'<rect x="{x}" y="{y + 3}" width="{w}" height="{row_h - 8}" fill="{colour}">'
                       f'<title>{_e(label)}: {value} {_e(part)}</title></rect>')
            x += w
        total = sum(v for _p, v, _c in parts)
        out.append(f'<text x="{x + 5}" y="{y + 15}" fill="#52606d">{total}</text>')
    legend_y = height - 10
    lx = label_w
    seen = []
    for _l, parts in rows:
        for part, _v, colour in parts:
            if part not in [p for p, _c in seen]:
                seen.append((part, colour))
    for part, colour in seen if legend else []:
        out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{lx + 14}" y="{legend_y}">{_e(part)}</text>')
        lx += 24 + 7 * len(part)
    out.append("</svg>")
    return "".join(out)


def _finding_rows(found: list[Finding], thumbs: str, labels: dict) -> str:
    rows = []
    for f in found[:MAX_FINDINGS_PER_DEVICE]:
        p = f.record.prov
        uri = (thumbnail_data_uri(f.features.thumbnail, thumbs, strip=f.is_video)
               if thumbs != "none" else None)
        kind = "strip" if f.is_video else "thumb"
        alt = f"{STRIP_FRAMES} frames ({thumbs})" if f.is_video else f"thumbnail ({thumbs})"
        thumb = f'<img class="{kind}" alt="{alt}" src="{uri}">' if uri else ""
        if f.top:
            m = f.top
            what = (f"{_e(m.set_name)} {_e(m.set_version)}<br>"
                    f"{_e(category_text(labels, m.set_name, m.category) or 'no category')}, "
                    f"{_e(m.algorithm)}" + (f", distance {m.distance}" if m.kind != "exact" else ""))
            if m.video_text:
                what += f"<br>{_e(m.video_text)}"
        else:
            what = "<br>".join(
                f"{_e(s.model)}: {_e(score_text(s.values))}" for s in f.scores) + '<br><span class="muted">ranking aid, not evidence</span>'
            if f.frames:
                what += f"<br>frames over the thresholds at {_e(f.frame_text)}"
        where = _e(display_path(p, member=False)) + (
            f" <b>!</b> {_e(p.member)}" if p.member else "")
        prov = (f"volume@{p.volume_offset} inode {p.inode}"
                + (" &middot; <b>deleted</b>" if f.deleted else "")
                + f" &middot; {f.record.size} B &middot; modified {_e(iso_utc(f.record.mtime) or '-')}")
        extra = ""
        if f.indicators:
            extra = f'<br><span style="color:#b91c1c">camera-original: {_e("; ".join(f.indicators))}</span>'
        colour = _KIND_COLOUR[f.kind]
        rows.append(
            f'<tr><td>{thumb}</td><td><span class="badge" style="background:{colour}">{f.kind}'
            f'</span></td><td>{where}<br><span class="muted">{prov}</span>{extra}<br>'
            f'<span class="mono">md5 {_e(f.features.md5)}<br>sha1 {_e(f.features.sha1)}</span></td>'
            f"<td>{what}</td></tr>")
    more = ""
    if len(found) > MAX_FINDINGS_PER_DEVICE:
        more = (f'<p class="muted">{len(found) - MAX_FINDINGS_PER_DEVICE} more findings are not '
                f"shown here: see <code>triage show</code> or the CSV export.</p>")
    return ("<table><tr><th></th><th>kind</th><th>file and provenance</th><th>match or score</th>"
            "</tr>" + "".join(rows) + "</table>" + more)


def _rules_html() -> str:
    """How the order is decided, from the rank module's own constants (so it cannot drift)."""
    from triage import rank as r
    rows = [
        ("exact alert matches", f"{r.EXACT_POINTS} x category weight per matched file"),
        ("near matches", f"{r.NEAR_POINTS} per file"),
        ("suspected new (model)", f"{r.SUSPECTED_POINTS} per picture"),
        ("camera-original picture", f"{r.SELF_PRODUCED_POINTS} per picture"),
        ("same camera across matches", f"{r.SAME_CAMERA_POINTS}"),
        ("matched camera took {}+ other pictures".format(r.DEVICE_CAMERA_MIN_PICTURES),
         f"{r.DEVICE_CAMERA_POINTS}"),
        ("access to children", ", ".join(f"{k} {v}" for k, v in r.ACCESS_POINTS.items())),
        ("custody deadline", f"passed or within 2 days {r.DEADLINE_SOON_POINTS}, "
                             f"within 7 days {r.DEADLINE_WEEK_POINTS}"),
        ("coverage", ", ".join(f"{k} {v}" for k, v in r.COVERAGE_POINTS.items() if v)),
    ]
    return ("<details><summary>How the order is decided</summary><p>First the band: exact "
            "matches, then near matches, then model suspicion only, then not fully examined, "
            "then clean. A higher band always ranks first, so a device that could not be fully "
            "examined never ranks below a clean one. Within a band, points:</p><table>"
            + "".join(f"<tr><td>{_e(a)}</td><td>{_e(b)}</td></tr>" for a, b in rows)
            + "</table></details>")


def build(store, thumbnails: str = "blurred", now: Optional[float] = None) -> str:
    """The report as one HTML string."""
    now = time.time() if now is None else now
    ordered = verdicts(store, now=now)
    devices = {d["id"]: d for d in store.devices()}
    runs = store.runs()
    labels = category_labels(store)
    case_name = store.case_ref()          # --case-ref, else the case folder's name
    per_device = {v.device_id: findings(store, v.device_id) for v in ordered}
    flags_by_dev: dict[str, list] = {}
    for _id, flag in store.flags():
        flags_by_dev.setdefault(flag.device_id, []).append(flag)

    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<meta name=\"referrer\" content=\"no-referrer\">"
             f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
             f"img-src data:; style-src 'unsafe-inline'\">"
             f"<title>triage report: {_e(case_name)}</title><style>{CSS}</style></head><body>"]
    parts.append(f"<header><h1>Triage report: {_e(case_name)}</h1>"
                 f'<div class="muted">generated {_e(iso_utc(now))} by triage {_e(__version__)}; '
                 f"{len(ordered)} devices</div>")
    parts.append('<div class="notice"><b>Model scores are a ranking aid, not evidence.</b> '
                 "A SUSPECTED_NEW picture or a near match needs a human look; only an examiner's "
                 "review of the original files is evidence. Thumbnails are "
                 + {"blurred": "blurred and greyscale on purpose.",
                    "clear": "shown as stored (unblurred).",
                    "none": "left out of this report."}[thumbnails] + "</div>")
    if runs:
        items = []
        for r in runs:
            sets = ", ".join(f"{h.get('name', '')} {h.get('version', '')} ({h.get('role', '')})"
                             for h in r.get("hashsets") or []) or "none"
            model = r.get("model") or {}
            model_text = (f"{model.get('name', '')} {model.get('version', '')} sha256 "
                          f"{str(model.get('sha256', ''))[:16]}\u2026") if model else "none"
            items.append(f"<li>run {r['id']}: {_e(iso_utc(r['started']))} to "
                         f"{_e(iso_utc(r.get('ended')) or 'not ended')} ({_e(r['status'])}) by "
                         f"{_e(r['operator'])}; hash sets: {_e(sets)}; model: {_e(model_text)}</li>")
        parts.append(f'<details><summary>Scan runs ({len(runs)})</summary><ul>{"".join(items)}'
                     "</ul></details>")
    parts.append("</header><main>")

    # the queue
    parts.append("<h2>Examination queue</h2>"
                 '<p class="muted">1 = examine first. Devices with exact alert matches come first, '
                 "then near matches, then pictures only the model suspects, then devices that "
                 "could not be fully examined, then clean ones; the score orders devices within "
                 "each band.</p>")
    rows = []
    for v in ordered:
        cov = f'<span class="cov" style="color:{_COVERAGE_COLOUR.get(v.coverage, "#000")}">{v.coverage}</span>'
        codes = sorted(v.flags, key=lambda c: -SEVERITY.get(c, 0))
        rows.append(f'<tr><td class="num">{v.rank}</td><td><a href="#{_anchor(v.device_id)}">'
                    f"{_e(v.device_id)}</a></td><td>{_e(v.exhibit or '-')}</td>"
                    f'<td class="num">{v.score:g}</td><td class="num">{v.alert_matches}</td>'
                    f'<td class="num">{v.near_matches}</td><td class="num">{v.suspected_new}</td>'
                    f"<td>{cov}</td><td>{''.join(_badge(c) for c in codes)}</td>"
                    f"<td>{_e(v.reasons[0]) if v.reasons else ''}</td></tr>")
    parts.append(_rules_html())
    parts.append('<table><tr><th class="num">#</th><th>device</th><th>exhibit</th>'
                 '<th class="num">score</th><th class="num">exact</th><th class="num">near</th>'
                 '<th class="num">new</th><th>coverage</th><th>flags</th><th>main reason</th></tr>'
                 + "".join(rows) + "</table>")

    # charts
    bars = [(v.device_id, [("exact", v.alert_matches, _KIND_COLOUR["exact"]),
                           ("near", v.near_matches, _KIND_COLOUR["near"]),
                           ("suspected", v.suspected_new, _KIND_COLOUR["suspected"])])
            for v in ordered]
    flag_counts: dict[str, int] = {}
    for flags in flags_by_dev.values():
        for f in flags:
            flag_counts[f.code] = flag_counts.get(f.code, 0) + 1
    flag_bars = [(code, [(code, flag_counts[code], _FLAG_COLOUR.get(code, "#52606d"))])
                 for code in sorted(flag_counts, key=lambda c: -SEVERITY.get(c, 0))]
    parts.append('<h2>Charts</h2><div class="charts"><figure>'
                 + _bar_chart(bars, "findings per device")
                 + "<figcaption>Findings per device: files with exact alert matches, near matches "
                   "only, and pictures the model suspects (queue order).</figcaption></figure>")
    if flag_bars:
        parts.append("<figure>" + _bar_chart(flag_bars, "flags per code", legend=False)
                     + "<figcaption>Flags raised, per code, worst first.</figcaption></figure>")
    parts.append("</div>")

    # one card per device
    parts.append("<h2>Devices</h2>")
    for v in ordered:
        dev = devices.get(v.device_id, {})
        ctx = v.context or {}
        cov_colour = _COVERAGE_COLOUR.get(v.coverage, "#000")
        parts.append(f'<section class="card" id="{_anchor(v.device_id)}">'
                     f"<h3>{v.rank}. {_e(v.device_id)}"
                     + (f' <span class="muted">exhibit {_e(v.exhibit)}</span>' if v.exhibit else "")
                     + f'</h3><div>score <b>{v.score:g}</b> &middot; coverage '
                     f'<span class="cov" style="color:{cov_colour}">{v.coverage}</span> &middot; '
                     f"suspect {_e(ctx.get('suspect') or '-')} &middot; access to children "
                     f"<b>{_e(ctx.get('access_to_children') or 'unknown')}</b>"
                     + (f" &middot; custody deadline {_e(ctx.get('custody_deadline'))}"
                        if ctx.get("custody_deadline") else "")
                     + "</div>"
                     f'<div class="muted mono">{_e(" ".join(v.evidence))} &middot; '
                     f"{_e(dev.get('format', ''))} &middot; {human_bytes(int(dev.get('media_size') or 0))}"
                     + (f" &middot; scanned {_e(iso_utc(dev.get('started')))} to "
                        f"{_e(iso_utc(dev.get('finished')) or '-')} ({_e(dev.get('status', ''))})"
                        if dev.get("started") else "") + "</div>")
        parts.append('<ul class="reasons">' + "".join(f"<li>{_e(r)}</li>" for r in v.reasons)
                     + "</ul>")
        if v.points:
            parts.append('<div class="points">points: '
                         + ", ".join(f"{_e(k)} {p}" for k, p in v.points.items()) + "</div>")
        coverage = store.coverage(v.device_id)
        if coverage:
            parts.append("<p><b>Not examined</b></p><table><tr><th>kind</th><th>where</th>"
                         '<th>reason</th><th class="num">bytes</th></tr>'
                         + "".join(f"<tr><td>{_e(c.kind)}</td><td>{_e(c.where.display())}</td>"
                                   f"<td>{_e(c.reason)}</td>"
                                   f'<td class="num">{human_bytes(c.bytes_not_examined)}</td></tr>'
                                   for c in coverage[:MAX_FLAGS_PER_DEVICE]) + "</table>")
        dev_flags = sorted(flags_by_dev.get(v.device_id, []),
                           key=lambda f: (-f.severity, f.raised_at))
        if dev_flags:
            parts.append(f"<details><summary><b>Flags ({len(dev_flags)})</b> "
                         + "".join(_badge(c) for c in sorted({f.code for f in dev_flags},
                                                              key=lambda c: -SEVERITY.get(c, 0)))
                         + "</summary><table><tr><th>raised</th><th>code</th><th>message</th></tr>"
                         + "".join(f"<tr><td>{_e(iso_utc(f.raised_at))}</td><td>{_badge(f.code)}"
                                   f"</td><td>{_e(f.message)}</td></tr>"
                                   for f in dev_flags[:MAX_FLAGS_PER_DEVICE])
                         + "</table></details>")
        found = per_device.get(v.device_id) or []
        if found:
            parts.append(f"<p><b>Findings ({len(found)})</b></p>" + _finding_rows(found, thumbnails, labels))
        parts.append("</section>")
    parts.append('<p class="muted">End of report. This file is self-contained; it names possibly '
                 "illicit files, so store and share it as you would the case itself.</p>")
    parts.append("</main></body></html>")
    return "".join(parts)


def write_report(store, out, thumbnails: str = "blurred", now: Optional[float] = None) -> str:
    if thumbnails not in ("blurred", "clear", "none"):
        raise ValueError(f"thumbnails must be blurred, clear or none, not {thumbnails!r}")
    page = build(store, thumbnails, now)
    with private_output(out) as fh:
        fh.write(page)
    return f"{len(page)} bytes"
