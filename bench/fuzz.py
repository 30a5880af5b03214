"""The long fuzz campaign: seeded mutants of the project's images, hash sets and context files.

Runs standalone: `.venv/bin/python bench/fuzz.py [--mutants N] [--text-mutants M] [--seed S]`.

Evidence mutants (triage/synth/mutate.py) come from the test images (bare ext4 and FAT16, MBR
with FAT32 + NTFS, GPT with ext4 + FAT32 as an uncompressed E01 set) and from a small synthetic
fleet (raw MBR NTFS + FAT32, split E01, split raw GPT ext4, bare ext4), spread evenly. Each is
judged by `triage files --hash md5`: ends within the bound, exits 0/1/2, no traceback, and on
exit 0 every allocated file's MD5 equals what Debian TSK's `icat` reads from the same mutant.
With `--scan-every K`, every K-th evidence mutant is also judged by a whole `triage scan` (Ray,
the planner and the batch workers, whose way to the files is not `triage files`'): a device not
complete or any gap is a gap, otherwise every allocated file's stored MD5 must be `icat`'s.
Hash-set and context mutants (VICS JSON, PDQ list, hashdeep, NSRL SQLite, context CSV and JSON)
are judged by `triage hashset import` and `triage context set`.

Prints a table of outcomes per source, the slowest mutants, and every failure with how to make
it again (source, seed, index, what was changed). Goal (issue 19): over at least 2,000 evidence
mutants and 500 hash-set and context mutants, 0 hangs, 0 tracebacks, 0 crashes and 0 silently
wrong results.
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from evidence_images import build_all  # noqa: E402
from triage.synth import build_fleet  # noqa: E402
from triage.synth.mutate import (judge, judge_command, judge_scan,  # noqa: E402
                                 mutate_text_file, write_mutants)

CLI = [sys.executable, "-c", "from cli import run; run()"]


def evidence_sources(work: Path) -> list[tuple[str, list[Path], list[int]]]:
    images = build_all(work / "images")
    out = []
    for name in ("ext4", "fat16", "mbr"):
        out.append((name, [images[name].path], list(images[name].offsets)))
    e01 = images["gpt_e01"]
    out.append(("gpt_e01", sorted(e01.path.parent.glob(e01.path.stem + ".E*")), list(e01.offsets)))
    fleet = work / "fleet"
    build_fleet(fleet, devices=6, seed=7, size="small")
    import json
    truth = json.loads((fleet / "truth.json").read_text())
    for d in truth["devices"]:
        if d["id"] in ("dev01", "dev02", "dev03", "dev05"):
            segs = [fleet / s for s in d["segments"]]
            out.append((f"synth {d['id']} ({d['format']})", segs,
                        [v["offset"] for v in d["volumes"]]))
    return out


def text_sources(work: Path) -> list[tuple[str, Path, str]]:
    fleet = work / "fleet"
    hashdeep = work / "set.hashdeep"
    lines = ["%%%% HASHDEEP-1.0", "%%%% size,md5,sha1,filename", "## made by bench/fuzz.py"]
    rng = random.Random(1)
    for i in range(200):
        lines.append(f"{rng.randrange(1, 10**6)},{rng.getrandbits(128):032x},"
                     f"{rng.getrandbits(160):040x},/x/{i}.jpg")
    hashdeep.write_text("\n".join(lines) + "\n")
    context_json = work / "context.json"
    import csv
    import json
    with open(fleet / "context.csv", newline="") as fh:
        context_json.write_text(json.dumps(list(csv.DictReader(fh))))
    return [("VICS JSON", fleet / "alert.vics.json", "hashset"),
            ("PDQ list", fleet / "alert.pdq.txt", "hashset"),
            ("hashdeep", hashdeep, "hashset"),
            ("NSRL SQLite", fleet / "nsrl.db", "hashset"),
            ("context CSV", fleet / "context.csv", "context"),
            ("context JSON", context_json, "context")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=200, help="evidence mutants (spread over sources)")
    ap.add_argument("--text-mutants", type=int, default=60, help="hash-set and context mutants")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--scan-every", type=int, default=0, metavar="K",
                    help="also judge every K-th evidence mutant by a whole `triage scan` (0: none)")
    args = ap.parse_args()
    failures = []
    table: dict[str, Counter] = defaultdict(Counter)
    slow = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="triage-fuzz-") as tmp:
        work = Path(tmp)
        sources = evidence_sources(work)
        per = max(1, args.mutants // len(sources))
        for name, segments, offsets in sources:
            mutants = write_mutants(segments, work / "mutants" / name.split()[0], per, args.seed,
                                    offsets)
            for i, m in enumerate(mutants):
                o = judge(m, timeout=args.timeout)
                table[name][o.verdict] += 1
                slow.append((o.seconds, name, m.how))
                if o.verdict in ("hang", "crash", "traceback", "silently-wrong"):
                    failures.append((name, i, m.how, o.verdict, o.detail or ", ".join(o.wrong[:3])))
                if args.scan_every > 0 and i % args.scan_every == 0:
                    case = work / "scans" / f"{m.path.parent.name}"
                    case.parent.mkdir(parents=True, exist_ok=True)
                    o = judge_scan(m, case, timeout=2 * args.timeout)
                    table[f"{name} [scan]"][o.verdict] += 1
                    slow.append((o.seconds, f"{name} [scan]", m.how))
                    if o.verdict in ("hang", "crash", "traceback", "silently-wrong"):
                        failures.append((f"{name} [scan]", i, m.how, o.verdict,
                                         o.detail or ", ".join(o.wrong[:3])))
                    shutil.rmtree(case.parent)
                for f in m.path.parent.iterdir():          # keep the disk use of one mutant
                    f.unlink()
        case = work / "case"
        from triage.store import CaseStore
        CaseStore(case, create=True).close()
        texts = text_sources(work)
        rng = random.Random(args.seed)
        per = max(1, args.text_mutants // len(texts))
        for name, source, kind in texts:
            data = source.read_bytes()
            for i in range(per):
                if source.suffix == ".db":               # SQLite: pages flipped or cut
                    from triage.synth.mutate import mutate
                    bad, how = mutate(data, rng, [(0, len(data))])
                else:
                    bad, how = mutate_text_file(data, rng)
                path = work / f"text.m{i}{source.suffix}"
                path.write_bytes(bad)
                cmd = (CLI + ["context", "set", str(path), "--case", str(case)] if kind == "context"
                       else CLI + ["hashset", "import", str(path), "--name", f"m{i}", "--role",
                                   "alert", "--store", str(work / "store"), "--format",
                                   {"VICS JSON": "vics", "PDQ list": "pdq", "hashdeep": "hashdeep",
                                    "NSRL SQLite": "nsrl-rdsv3"}[name]])
                t0 = time.monotonic()
                verdict, code, detail = judge_command(cmd, timeout=args.timeout)
                table[name][verdict] += 1
                slow.append((time.monotonic() - t0, name, how))
                if verdict in ("hang", "crash", "traceback"):
                    failures.append((name, i, how, verdict, detail))
    verdicts = ["ok", "gap", "refused", "silently-wrong", "hang", "crash", "traceback"]
    print(f"{'source':<34}" + "".join(f"{v:>15}" for v in verdicts) + f"{'total':>8}")
    for name, counts in table.items():
        print(f"{name:<34}" + "".join(f"{counts[v]:>15}" for v in verdicts)
              + f"{sum(counts.values()):>8}")
    total = Counter()
    for counts in table.values():
        total.update(counts)
    print(f"{'all':<34}" + "".join(f"{total[v]:>15}" for v in verdicts) + f"{sum(total.values()):>8}")
    print(f"\n{sum(total.values())} mutants in {time.monotonic() - t_start:.0f} s; slowest:")
    for secs, name, how in sorted(slow, reverse=True)[:5]:
        print(f"  {secs:6.1f} s  {name}: {how[:90]}")
    if failures:
        print(f"\n{len(failures)} failures (seed {args.seed}):")
        for name, i, how, verdict, detail in failures:
            print(f"  {verdict:<15} {name} #{i}: {how[:80]} -- {detail[:160]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
