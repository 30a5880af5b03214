"""List and MD5 every file of a disk image, on the raw image and on its E01, against TSK.

Runs standalone: `.venv/bin/python bench/enumerate.py [--quick] [--image RAW] [--rounds N]`.

Builds an ext4 image on the fly (mke2fs -d; half incompressible "pictures", half text, like a
seized disk) unless --image is given, acquires it to a split E01 (ewfacquire, deflate "fast",
MD5 stored), then times, best of --rounds, interleaved so machine load hits all alike:

  triage walk+MD5       `triage files IMAGE --hash md5 --files-only` (raw, then E01)
  TSK baseline          `tsk_recover -a IMAGE DIR` + `md5deep -r DIR` (raw, then E01)
  ewfverify             Debian's libewf: inflate + MD5 of the whole E01 media
  triage media MD5      the same job through triage's E01 reader (evidence.media_hashes, MD5)

Each runs as its own process under /usr/bin/time, so wall time and peak RSS are per command.
Prints files/s, MB/s of file content, peak RSS, and the ratios: triage against the TSK
baseline, and triage on E01 against ewfverify (goal: within 1.25x).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MiB = 1 << 20


def build_tree(root: Path, files: int, mean_kb: int, seed: int = 1) -> int:
    """`files` files in 20 folders; sizes from a camera-roll-like mix; returns content bytes."""
    rng = random.Random(seed)
    sizes = [2_000, 20_000, 80_000, 200_000, 1_500_000]
    scale = mean_kb * 1000 / (sum(sizes) / len(sizes))
    total = 0
    for i in range(files):
        folder = root / f"d{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        n = int(rng.choice(sizes) * scale)
        if i % 2:
            data = os.urandom(n)                                  # pictures do not compress
        else:
            line = f"line {i} of an ordinary document, repeated\n".encode()
            data = (line * (n // len(line) + 1))[:n]
        (folder / f"f{i:05d}.{'jpg' if i % 2 else 'txt'}").write_bytes(data)
        total += n
    return total


def build_image(work: Path, files: int, mean_kb: int) -> Path:
    src = work / "src"
    content = build_tree(src, files, mean_kb)
    image = work / "disk.raw"
    size_mb = int(content * 1.3 / MiB) + 64
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(src), str(image), f"{size_mb}M"],
                   check=True, capture_output=True)
    shutil.rmtree(src)
    return image


def acquire(raw: Path, work: Path) -> Path:
    target = work / "e01" / "disk"
    target.parent.mkdir(exist_ok=True)
    seg = max(MiB, raw.stat().st_size // 8)                 # a few segments, like a lab's 2 GB splits
    subprocess.run(["ewfacquire", "-u", "-q", "-t", str(target), "-f", "encase6", "-c", "fast",
                    "-S", str(seg), "-C", "bench", "-D", "bench", "-E", "1", "-e", "bench", "-N", "-",
                    "-m", "fixed", "-M", "physical", str(raw)], check=True, capture_output=True)
    return target.with_suffix(".E01")


CPU: dict = {}     # label -> CPU seconds (user+sys) of the best run: load-independent


def timed(cmd: list[str], **kw) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, peak RSS MB, result) of one command, measured by /usr/bin/time.
    The CPU seconds of the call are left in `timed.cpu`."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        res = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", "-o", tf.name, *cmd], **kw)
        wall, rss_kb, user, sys_ = tf.read().split()[-4:]
    timed.cpu = float(user) + float(sys_)
    return float(wall), int(rss_kb) / 1024, res


def triage_files(image: Path) -> tuple[float, float, int, int]:
    wall, rss, res = timed([PY, "-c", "from cli import main; main()", "files", str(image), "--hash", "md5",
                            "--files-only"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = content = 0
    import json
    for line in res.stdout.splitlines():
        row = json.loads(line)
        files += 1
        content += row["size"]
    return wall, rss, files, content


def tsk_baseline(image: Path, work: Path) -> tuple[float, float, int]:
    out = work / "recovered"
    shutil.rmtree(out, ignore_errors=True)
    w1, r1, _ = timed(["tsk_recover", "-a", str(image), str(out)], capture_output=True, check=True)
    c1 = timed.cpu
    w2, r2, res = timed(["md5deep", "-r", str(out)], capture_output=True, text=True, check=True)
    timed.cpu += c1
    n = len(res.stdout.splitlines())
    shutil.rmtree(out, ignore_errors=True)
    return w1 + w2, max(r1, r2), n


def ewfverify(e01: Path) -> tuple[float, float]:
    wall, rss, _ = timed(["ewfverify", "-q", str(e01)], capture_output=True, check=True)
    return wall, rss


def triage_media(e01: Path) -> tuple[float, float]:
    code = ("import sys\n"
            "from triage.evidence import media_hashes, open_evidence\n"
            "ev = open_evidence(sys.argv[1])\n"
            "assert media_hashes(ev, algorithms=('md5',))['md5'] == ev.ref.stored_hashes['md5']\n")
    wall, rss, _ = timed([PY, "-c", code, str(e01)], cwd=ROOT, capture_output=True, check=True)
    return wall, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", type=Path, help="a raw image to use instead of building one")
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--mean-kb", type=int, default=300, help="mean file size (KB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="400 files, 1 round (a smoke run)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the images (default: a temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.files, args.rounds = 400, 1
    for tool in ("mke2fs", "ewfacquire", "ewfverify", "tsk_recover", "md5deep"):
        if shutil.which(tool) is None:
            sys.exit(f"bench needs {tool} (make deps installs it)")
    work = Path(tempfile.mkdtemp(prefix="bench_enum_", dir=args.work))
    try:
        raw = args.image or build_image(work, args.files, args.mean_kb)
        e01 = acquire(raw, work)
        segments = sorted(e01.parent.glob("disk.E*"))
        media = raw.stat().st_size
        print(f"image: {raw.name}, {media / 1e6:.0f} MB media; E01 {sum(s.stat().st_size for s in segments) / 1e6:.0f} MB "
              f"in {len(segments)} segments (deflate fast); best of {args.rounds}, interleaved")
        best: dict[str, tuple] = {}

        def keep(name, value):
            if name not in best or value[0] < best[name][0]:
                best[name] = value
                CPU[name] = timed.cpu

        for _ in range(args.rounds):
            keep("triage raw", triage_files(raw))
            keep("triage E01", triage_files(e01))
            keep("tsk raw", tsk_baseline(raw, work))
            keep("tsk E01", tsk_baseline(e01, work))
            keep("ewfverify", ewfverify(e01))
            keep("media E01", triage_media(e01))
        files, content = best["triage raw"][2], best["triage raw"][3]
        assert best["triage E01"][2] == files, "raw and E01 listings differ"
        print(f"{files} files, {content / 1e6:.0f} MB of content (TSK recovered {best['tsk raw'][2]})\n")
        print(f"{'':38s}{'wall':>8s}{'CPU':>8s}{'files/s':>10s}{'MB/s':>9s}{'peak RSS':>11s}")

        def row(label, key, nbytes, nfiles=None):
            wall, rss = best[key][0], best[key][1]
            fps = f"{nfiles / wall:,.0f}" if nfiles else ""
            print(f"{label:38s}{wall:7.2f}s{CPU[key]:7.2f}s{fps:>10s}{nbytes / 1e6 / wall:9.0f}{rss:9.0f} MB")

        row("triage files --hash md5, raw", "triage raw", content, files)
        row("triage files --hash md5, E01", "triage E01", content, files)
        row("tsk_recover -a + md5deep -r, raw", "tsk raw", content, files)
        row("tsk_recover -a + md5deep -r, E01", "tsk E01", content, files)
        row("ewfverify (inflate + MD5 of media)", "ewfverify", media)
        row("triage E01 reader (read + MD5 media)", "media E01", media)
        r_raw = best["triage raw"][0] / best["tsk raw"][0]
        r_e01 = best["triage E01"][0] / best["tsk E01"][0]
        r_verify = best["triage E01"][0] / best["ewfverify"][0]
        r_media = best["media E01"][0] / best["ewfverify"][0]
        print(f"\nratio triage/TSK baseline: raw {r_raw:.2f}x, E01 {r_e01:.2f}x (below 1 = triage faster)")
        print(f"E01 (wall): triage walk+MD5 / ewfverify {r_verify:.2f}x; media read+MD5 / ewfverify {r_media:.2f}x "
              f"(goal <= 1.25x); E01 media MB/s triage {media / 1e6 / best['media E01'][0]:.0f} "
              f"vs ewfverify {media / 1e6 / best['ewfverify'][0]:.0f}")
        print(f"E01 (CPU seconds, independent of machine load): walk+MD5 / ewfverify "
              f"{CPU['triage E01'] / CPU['ewfverify']:.2f}x, media / ewfverify {CPU['media E01'] / CPU['ewfverify']:.2f}x; "
              f"raw walk {CPU['triage raw']:.2f}s, so E01 inflation adds {CPU['triage E01'] - CPU['triage raw']:.2f}s "
              f"of CPU")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
