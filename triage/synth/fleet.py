"""The synthetic fleet: what each device holds, where, and what a correct triage must find.

`build_fleet` plans every device from the seed, builds its file systems and container, and
writes the hash sets (VICS alert set, NSRL RDSv3 minimal), the perceptual lists, the case
context and `truth.json`. The plan is the truth: every planted item is recorded with the
coordinates TSK needs to reach it again.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sqlite3
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from triage import __version__
from triage.errors import TriageError
from triage.synth import disks, filesystems, pictures as pics
from triage.synth.filesystems import MiB, Entry

VICS_CONTEXT = "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/UK/$metadata#Media"
# UK CAID grades A/B/C carried as VICS Category 1/2/3 (see docs/formats.md 1.6: a convention)
CAID_GRADES = {1: "A", 2: "B", 3: "C"}
EPOCH_2023 = 1672531200         # 2023-01-01T00:00:00Z: the fleet's files date from 2023-2025
ZIP_TIME = (2024, 3, 9, 14, 22, 10)

Progress = Callable[[str, int, int], None]     # (stage, done, total)


# ---------------------------------------------------------------- profiles

@dataclass(frozen=True)
class Profile:
    docs: int
    pictures: int                   # benign pictures outside DCIM
    unique_pictures: int            # distinct images behind them (the rest are re-saved copies)
    picture_size: tuple[int, int]
    camera: int                     # camera JPEGs under DCIM
    camera_frames: int              # distinct frames behind them
    camera_size: tuple[int, int]
    zips: int
    system_files: int
    system_size: tuple[int, int]
    bitlocker_size: int = 16 * MiB


PROFILES = {
    "small": Profile(24, 36, 36, (480, 360), 6, 6, (640, 480), 1, 10, (4096, 40960)),
    "medium": Profile(500, 700, 350, (800, 600), 80, 8, (4000, 3000), 8, 80, (16384, 262144), 64 * MiB),
    "large": Profile(11000, 5600, 700, (1024, 768), 640, 12, (4000, 3000), 40, 2400, (4096, 131072), 64 * MiB),
}


# ---------------------------------------------------------------- device roles

@dataclass(frozen=True)
class DeviceSpec:
    id: str
    role: str                       # exact, near_only, encrypted, clean, model_bait
    table: str                      # mbr, mbr_ext (logical partitions in an extended one), gpt, none
    volumes: tuple[tuple[str, str], ...]    # (fs kind, label); kind bitlocker = encrypted
    container: str                  # raw, split_raw, split_raw_aa, e01, e01_split
    access: str                     # access_to_children in the context file
    kind: str                       # laptop, desktop, phone card...: flavour for the exhibit


BASE_PLAN = (
    ("exact", "mbr", (("ntfs", "Windows"), ("fat32", "SDCARD")), "raw", "lives_with", "laptop"),
    ("exact", "mbr", (("ntfs", "Windows"), ("fat32", "SDCARD")), "e01_split", "none", "laptop"),
    ("near_only", "gpt", (("ext4", "home"),), "split_raw", "unknown", "desktop"),
    ("encrypted", "mbr_ext", (("fat32", "USBDATA"), ("bitlocker", "")), "e01", "none", "usb drive"),
    ("clean", "none", (("ext4", "data"),), "raw", "none", "server disk"),
    ("model_bait", "gpt", (("ntfs", "Data"),), "raw", "other", "desktop"),
)
EXTRA_PLAN = (
    ("exact", "none", (("fat32", "PHONE"),), "split_raw_aa", "works_with", "phone card"),
    ("clean", "gpt", (("ntfs", "Backup"),), "e01", "none", "backup disk"),
    ("near_only", "mbr", (("ext4", "root"),), "raw", "none", "laptop"),
)


def plan_devices(n: int, size: str, ntfs_ok: bool) -> list[DeviceSpec]:
    rows = [BASE_PLAN[i] if i < len(BASE_PLAN) else EXTRA_PLAN[(i - len(BASE_PLAN)) % len(EXTRA_PLAN)]
            for i in range(n)]
    specs = []
    for i, (role, table, vols, container, access, kind) in enumerate(rows):
        if size == "large" and i == 0:
            # the benchmark device: one big ext4 in a GPT, like the reference measurements
            table, vols = "gpt", (("ext4", "home"),)
        if not ntfs_ok:
            vols = tuple(("ext4" if k == "ntfs" else k, lab) for k, lab in vols)
        specs.append(DeviceSpec(f"dev{i + 1:02d}", role, table, vols, container, access, kind))
    return specs


# ---------------------------------------------------------------- content helpers

WORDS = ("invoice meeting quarterly garden holiday budget report school football recipe train "
         "weekend minutes agenda project supplier delivery council birthday insurance mortgage "
         "weather allotment match fixture planning receipt warranty broadband renewal").split()
USERS = ("alex", "sam", "jordan", "chris", "taylor", "morgan", "jamie", "robin", "casey")
ALBUMS = ("Holiday 2023", "Garden", "Screenshots", "Wallpapers", "Misc", "Family BBQ", "Walks")
SYSTEM_NAMES = ("kernel32", "user32", "gdi32", "advapi32", "shell32", "ole32", "msvcrt", "ntdll",
                "comctl32", "ws2_32", "crypt32", "winhttp", "dxgi", "d3d11", "mfplat", "wininet")


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), n)).capitalize() + "."


def text_doc(rng: np.random.Generator) -> bytes:
    paras = [" ".join(_sentence(rng, int(rng.integers(6, 16))) for _ in range(int(rng.integers(2, 6))))
             for _ in range(int(rng.integers(2, 8)))]
    return ("\r\n\r\n".join(paras) + "\r\n").encode()


def csv_doc(rng: np.random.Generator) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["date", "item", "amount"])
    for _ in range(int(rng.integers(5, 60))):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
        w.writerow([day.isoformat(), WORDS[int(rng.integers(len(WORDS)))], f"{rng.uniform(1, 400):.2f}"])
    return buf.getvalue().encode()


def _zip(members: list[tuple[str, bytes]], compress: bool = True) -> bytes:
    """A zip with fixed member times, so the same members give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def docx_doc(rng: np.random.Generator) -> bytes:
    """A minimal but real WordprocessingML package: Word and LibreOffice open it."""
    body = "".join(f"<w:p><w:r><w:t>{_sentence(rng, int(rng.integers(5, 14)))}</w:t></w:r></w:p>"
                   for _ in range(int(rng.integers(3, 12))))
    ns = "http://schemas.openxmlformats.org"
    return _zip([
        ("[Content_Types].xml",
         f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="{ns}/package/2006/content-types">'
         f'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
         f'<Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" '
         f'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'.encode()),
        ("_rels/.rels",
         f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{ns}/package/2006/relationships">'
         f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/officeDocument" '
         f'Target="word/document.xml"/></Relationships>'.encode()),
        ("word/document.xml",
         f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document '
         f'xmlns:w="{ns}/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>'.encode()),
    ])


def system_file(seed: int, i: int, lo: int, hi: int) -> tuple[str, bytes]:
    """Fake PE bytes: an MZ stub and noise. Identical on every device, and all in the NSRL set."""
    rng = pics.rng_for(seed, "system", i)
    base = SYSTEM_NAMES[i % len(SYSTEM_NAMES)] + ("" if i < len(SYSTEM_NAMES) else f"_{i // len(SYSTEM_NAMES)}")
    ext = ".exe" if i % 5 == 4 else ".dll"
    stub = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(44) + b"\x80\x00\x00\x00"
    stub += b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21This program cannot be run in DOS mode.\r\r\n$"
    stub = stub.ljust(0x80, b"\0") + b"PE\0\0"
    return base + ext, stub + rng.bytes(int(rng.integers(lo, hi)))


def _hashes(data: bytes) -> dict:
    return {"md5": hashlib.md5(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


# ---------------------------------------------------------------- alert set

@dataclass
class AlertItem:
    id: str
    name: str
    category: int
    data: bytes
    image: object                    # decoded PIL image (the near-duplicates start from it)
    pdq: str = ""
    pdq_quality: int = 0
    phash: str = ""
    camera: Optional[pics.Camera] = None

    def record(self) -> dict:
        rec = {"id": self.id, "name": self.name, "category": self.category,
               "caid_grade": CAID_GRADES[self.category], "pdq": self.pdq,
               "pdq_quality": self.pdq_quality, "phash": self.phash, **_hashes(self.data)}
        if self.camera:
            rec["camera"] = {"make": self.camera.make, "model": self.camera.model}
        return rec


N_ALERT = 17
EXACT_ITEMS = (0, 1, 2, 3, 4)       # planted as exact copies on "exact" devices
CAMERA_ITEM = 4                     # carries the suspect camera's EXIF, planted under DCIM
NEAR_ITEMS = (5, 6, 7, 8, 9)        # only near-duplicates of these are planted
ADS_ITEM = 10                       # in an NTFS alternate data stream (NTFS devices only)
CARD_DELETED_ITEM = 11              # deleted from the DCIM folder
UNALLOCATED_EXACT_ITEM = 12         # its bytes in free space, no name or inode left
UNALLOCATED_NEAR_ITEM = 13          # a resized near-duplicate of it, the same way
PDF_ITEM = 14                       # an exact copy stored whole inside a PDF
THUMBCACHE_ITEM = 15                # a near-duplicate thumbnail in thumbcache_256.db
EXIF_ITEM = 16                      # the EXIF thumbnail of a harmless-looking JPEG
VIDEO_ITEM = 5                      # shown for 3 s in a video on "near_only" devices
CATEGORIES = (1, 2, 3, 2, 1, 1, 2, 3, 3, 2, 1, 3, 1, 2, 2, 3, 1)


def suspect_camera(seed: int) -> pics.Camera:
    return pics.CAMERAS[int(pics.rng_for(seed, "camera").integers(len(pics.CAMERAS)))]


def make_alert_set(seed: int) -> list[AlertItem]:
    items = []
    cam = suspect_camera(seed)
    for i in range(N_ALERT):
        img = pics.alert_picture(seed, i)
        camera = cam if i == CAMERA_ITEM else None
        exif = pics.camera_exif(cam, "2024:06:14 19:02:33", f"{seed:08x}{i:024x}") if camera else None
        data = pics.encode(img, "jpeg", exif=exif)
        item = AlertItem(f"alert-{i + 1:03d}", f"alert-{i + 1:03d}.jpg", CATEGORIES[i], data,
                         pics.decode(data), camera=camera)
        item.pdq, item.pdq_quality, item.phash = pics.perceptual(data)
        items.append(item)
    return items


# ---------------------------------------------------------------- device content

@dataclass
class Planted:
    """One planted item on a device: the truth record before TSK coordinates are added."""

    entry: Entry
    volume: int                      # index among the device's file-system volumes
    record: dict


class ContentMaker:
    """Makes the files of one device. Benign pictures come from a per-device pool, checked to be
    far (PDQ > 31) from every alert picture, so a benign file never causes a near match."""

    def __init__(self, seed: int, spec: DeviceSpec, profile: Profile, alerts: list[AlertItem],
                 staging: Path, progress: Progress):
        self.seed, self.spec, self.p, self.alerts = seed, spec, profile, alerts
        self.rng = pics.rng_for(seed, spec.id)
        self.user = USERS[int(self.rng.integers(len(USERS)))]
        self.staging = staging
        self.progress = progress
        self.base_time = EPOCH_2023 + int(self.rng.integers(0, 365 * 86400))
        self._pool: dict[int, tuple[bytes, str]] = {}

    def when(self) -> float:
        return float(self.base_time + int(self.rng.integers(0, 540 * 86400)))

    def _fill_pool(self) -> None:
        """Make every distinct benign picture; in worker processes when there are many."""
        alert_pdqs = tuple(a.pdq for a in self.alerts)
        jobs = [(self.seed, self.spec.id, u, self.p.picture_size, alert_pdqs)
                for u in range(self.p.unique_pictures)]
        w, h = self.p.picture_size
        self._pool = dict(enumerate(_parallel_map(_pool_picture, jobs, pixels=len(jobs) * w * h)))

    def picture(self, j: int) -> tuple[bytes, str]:
        """Benign picture number j: unique up to `unique_pictures`, then re-saved copies."""
        u = j % self.p.unique_pictures
        if not self._pool:
            self._fill_pool()
        data, ext = self._pool[u]
        if j >= self.p.unique_pictures:
            if ext == "jpg":
                data = pics.restamp_jpeg(data, f"{self.spec.id}/{j}".encode())
            elif ext == "png":   # an ancillary tEXt chunk before IEND: new bytes, same pixels
                chunk = b"Comment\0" + f"{self.spec.id}/{j}".encode()
                crc = pics.zlib.crc32(b"tEXt" + chunk).to_bytes(4, "big")
                data = data[:-12] + len(chunk).to_bytes(4, "big") + b"tEXt" + chunk + crc + data[-12:]
            else:
                data = data + f"\0{self.spec.id}/{j}".encode()     # trailing bytes decoders ignore
        return data, ext

    def camera_photos(self, cam: pics.Camera, dcim: str) -> list[Entry]:
        w, h = self.p.camera_size
        frames = _parallel_map(_camera_frame, [(self.seed, f"{self.spec.id}/{k}", w, h)
                                               for k in range(self.p.camera_frames)],
                               pixels=self.p.camera_frames * w * h)
        entries = []
        t0 = self.when()
        for k in range(self.p.camera):
            t = t0 + k * 97
            stamp = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y:%m:%d %H:%M:%S")
            exif = pics.camera_exif(cam, stamp, f"{self.spec.id}{k:020d}")
            data = pics.splice_exif(frames[k % len(frames)], exif)
            path = f"{dcim}/IMG_{1000 + k:04d}.JPG"
            if len(data) > 1 * MiB:     # large photos go through the staging dir, not memory
                f = self.staging / f"{self.spec.id}_{k}.jpg"
                f.write_bytes(data)
                entries.append(Entry(path, f, t))
            else:
                entries.append(Entry(path, data, t))
            if k % 20 == 0:
                self.progress(f"{self.spec.id}: camera photos", k, self.p.camera)
        return entries

    def benign(self, system_files: list[tuple[str, bytes]], with_camera: bool) -> tuple[list[Entry], list[Entry]]:
        """(main volume entries, DCIM entries) of ordinary content."""
        u = f"/Users/{self.user}"
        main: list[Entry] = []
        for k in range(self.p.docs):
            r = pics.rng_for(self.seed, self.spec.id, "doc", k)
            kind = int(r.integers(10))
            name = f"{WORDS[int(r.integers(len(WORDS)))]}_{k:04d}"
            sub = ("Documents", "Documents/Work", "Desktop", "Documents/Letters")[int(r.integers(4))]
            if kind < 6:
                main.append(Entry(f"{u}/{sub}/{name}.txt", text_doc(r), self.when()))
            elif kind < 8:
                main.append(Entry(f"{u}/{sub}/{name}.csv", csv_doc(r), self.when()))
            else:
                main.append(Entry(f"{u}/{sub}/{name}.docx", docx_doc(r), self.when()))
        for j in range(self.p.pictures):
            data, ext = self.picture(j)
            album = ALBUMS[j % len(ALBUMS)]
            main.append(Entry(f"{u}/Pictures/{album}/pic_{j:05d}.{ext}", data, self.when()))
            if j % 200 == 0:
                self.progress(f"{self.spec.id}: pictures", j, self.p.pictures)
        for z in range(self.p.zips):
            members = [(f"photos/p{z}_{m}.{self.picture(z * 7 + m)[1]}", self.picture(z * 7 + m)[0])
                       for m in range(5)]
            zone = {"Zone.Identifier": b"[ZoneTransfer]\r\nZoneId=3\r\n"} if self.spec.volumes[0][0] == "ntfs" else {}
            main.append(Entry(f"{u}/Downloads/photos_{z + 1}.zip", _zip(members, compress=False), self.when(),
                              streams=zone))
        for name, data in system_files:
            main.append(Entry(f"/Windows/System32/{name}", data, float(EPOCH_2023 - 86400 * 30)))
        dcim = []
        if with_camera:
            self.camera = (suspect_camera(self.seed) if self.spec.role == "exact"
                           else pics.CAMERAS[int(self.rng.integers(len(pics.CAMERAS)))])
            folder = "/DCIM/100" + "".join(ch for ch in self.camera.make.upper() if ch.isalpha())[:5]
            dcim = self.camera_photos(self.camera, folder)
        return main, dcim


def _pool_picture(seed: int, device: str, u: int, size: tuple[int, int],
                  alert_pdqs: tuple[str, ...]) -> tuple[bytes, str]:
    """Distinct benign picture `u` of a device, redrawn until it is further than the PDQ
    match threshold from every alert picture, so benign files never cause near matches."""
    rng = pics.rng_for(seed, device, "pic", u)
    w, h = int(size[0] * rng.uniform(0.6, 1.0)), int(size[1] * rng.uniform(0.6, 1.0))
    fmt = ("jpeg", "jpeg", "jpeg", "png", "gif", "webp")[int(rng.integers(6))]
    salt = 0
    while True:
        data = pics.encode(pics.benign_picture(seed, f"{device}/{u}/{salt}", w, h), fmt)
        h_pdq = pics.perceptual(data)[0]
        if all(pics.hamming(h_pdq, a) > pics.PDQ_MATCH for a in alert_pdqs):
            return data, {"jpeg": "jpg"}.get(fmt, fmt)
        salt += 1


def _camera_frame(seed: int, name: str, w: int, h: int) -> bytes:
    return pics.encode(pics.camera_frame(seed, name, w, h), "jpeg", 92)


PARALLEL_MIN_PIXELS = 40_000_000     # below this much drawing, a process pool costs more than it saves


def _parallel_map(fn, jobs: list[tuple], pixels: int = 0) -> list:
    """fn(*job) for every job, in order; over all cores when the work is worth a process pool.
    Every job is seeded by its own arguments, so the result does not depend on scheduling."""
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or pixels < PARALLEL_MIN_PIXELS:
        return [fn(*job) for job in jobs]
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(fn, *zip(*jobs), chunksize=max(1, len(jobs) // (workers * 8))))


def _plant_record(kind: str, item: AlertItem, entry: Entry, data: bytes, **extra) -> dict:
    rec = {"kind": kind, "alert_id": item.id, "category": item.category, "path": entry.path,
           "ads": None, "deleted": entry.deleted, "in_archive": None, "renamed": False, **_hashes(data)}
    rec.update(extra)
    return rec


def plant(maker: ContentMaker, dcim_folder: str, card: int) -> list[Planted]:
    """Put the alert stand-ins (exact) or their near-duplicates where an offender would.
    `card` is the file-system volume holding DCIM (the camera card when there is one)."""
    u = f"/Users/{maker.user}"
    alerts = maker.alerts
    out: list[Planted] = []
    role = maker.spec.role
    if role == "exact":
        a = alerts[EXACT_ITEMS[0]]
        e = Entry(f"{u}/Pictures/Saved/IMG-20240611-WA0003.jpg", a.data, maker.when())
        out.append(Planted(e, 0, _plant_record("exact", a, e, a.data)))
        a = alerts[EXACT_ITEMS[1]]
        e = Entry(f"{u}/Pictures/Old/received_file_2.jpg", a.data, maker.when(), deleted=True)
        out.append(Planted(e, 0, _plant_record("exact", a, e, a.data)))
        a = alerts[EXACT_ITEMS[2]]
        member = "new folder/DSC00412.jpg"
        z = Entry(f"{u}/Downloads/backup_old.zip", _zip([("readme.txt", b"old stuff\r\n"), (member, a.data)]),
                  maker.when())
        out.append(Planted(z, 0, _plant_record("exact", a, z, a.data, in_archive={
            "archive": z.path, "member": member, **{f"archive_{k}": v for k, v in _hashes(z.data).items()}})))
        a = alerts[EXACT_ITEMS[3]]
        e = Entry(f"{u}/AppData/Local/Temp/cache/f_00a3c1.dat", a.data, maker.when())
        out.append(Planted(e, 0, _plant_record("exact", a, e, a.data, renamed=True)))
        a = alerts[CAMERA_ITEM]
        e = Entry(f"{dcim_folder}/IMG_0107.JPG", a.data, maker.when())
        vol = card
        out.append(Planted(e, vol, _plant_record("exact", a, e, a.data, camera={
            "make": a.camera.make, "model": a.camera.model})))
        # deleted from the camera card (FAT on a two-volume device): the name loses its first
        # byte, the clusters stay readable
        a = alerts[CARD_DELETED_ITEM]
        e = Entry(f"{dcim_folder}/IMG_0108.JPG", a.data, maker.when(), deleted=True)
        out.append(Planted(e, vol, _plant_record("exact", a, e, a.data)))
        if maker.spec.volumes[0][0] == "ntfs":
            # hidden in an alternate data stream of a harmless text file
            a = alerts[ADS_ITEM]
            e = Entry(f"{u}/Documents/notes.txt", b"shopping: milk, bread\r\n", maker.when(),
                      streams={"thumbs.jpg": a.data})
            out.append(Planted(e, 0, _plant_record("exact", a, e, a.data, ads="thumbs.jpg")))
        near = [(NEAR_ITEMS[0], "resize", f"{u}/Pictures/Saved/IMG-20240702-WA0011.jpg", False)]
    elif role == "near_only":
        near = [(NEAR_ITEMS[1], "recompress", f"{u}/Pictures/Misc/image(3).jpg", False),
                (NEAR_ITEMS[2], "crop", f"{u}/Downloads/cropped.jpg", False),
                (NEAR_ITEMS[3], "to_png", f"{u}/Pictures/Screenshots/Screenshot_2024-05-02.png", False),
                (NEAR_ITEMS[4], "to_webp", f"{u}/Downloads/file_88.webp", True)]
    else:
        near = []
    for idx, transform, path, deleted in near:
        a = alerts[idx]
        tried = (transform,) + tuple(t for t in pics.NEAR_TRANSFORMS if t != transform)
        for t in tried:
            try:
                data, ext, dist = pics.near_duplicate_within(a.image, a.pdq, t)
                break
            except ValueError:
                continue
        else:
            raise TriageError(f"could not make a near-duplicate of {a.id} within PDQ {pics.NEAR_LIMIT}")
        path = path.rsplit(".", 1)[0] + "." + ext
        e = Entry(path, data, maker.when(), deleted=deleted)
        n_pdq, n_q, n_phash = pics.perceptual(data)
        rec = _plant_record("near", a, e, data, near_dup_of=a.id, transform=t, pdq=n_pdq,
                            pdq_quality=n_q, pdq_distance=dist, phash=n_phash,
                            phash_distance=pics.hamming(a.phash, n_phash))
        out.append(Planted(e, 0, rec))
    return out


def unallocated_content(maker: ContentMaker) -> list[tuple[str, AlertItem | None, bytes, dict]]:
    """What an "exact" device holds only in free space: (kind, alert item, bytes, extra truth)
    for an exact stand-in, a resized near one, and a benign control picture."""
    if maker.spec.role != "exact":
        return []
    a = maker.alerts[UNALLOCATED_EXACT_ITEM]
    out: list = [("exact", a, a.data, {})]
    b = maker.alerts[UNALLOCATED_NEAR_ITEM]
    data, _ext, dist = pics.near_duplicate_within(b.image, b.pdq, "resize")
    n_pdq, n_q, n_phash = pics.perceptual(data)
    out.append(("near", b, data, {"near_dup_of": b.id, "transform": "resize", "pdq": n_pdq,
                                  "pdq_quality": n_q, "pdq_distance": dist, "phash": n_phash,
                                  "phash_distance": pics.hamming(b.phash, n_phash)}))
    # a re-saved benign picture whose bytes end where its structure does (re-saved WebP and
    # GIF copies carry trailing bytes, which a carver rightly leaves out)
    j = maker.p.unique_pictures
    while (control := maker.picture(j))[1] not in ("jpg", "png"):
        j += 1
    out.append(("control", None, control[0], {"ext": control[1]}))
    return out


def embedded_content(maker: ContentMaker) -> tuple[list[Entry], list[dict]]:
    """What an "exact" device holds inside other files, with a benign control of each: a PDF
    embedding an exact stand-in, a thumbnail cache holding a near-duplicate thumbnail, a JPEG
    whose EXIF thumbnail is an exact stand-in. Returns the files and, per picture inside, its
    truth (container path, offset and length in it, hashes)."""
    from triage.synth import containers
    if maker.spec.role != "exact":
        return [], []
    u = f"/Users/{maker.user}"
    alerts = maker.alerts
    benign: list[bytes] = []              # three re-saved benign JPEGs (controls, covers)
    j = maker.p.unique_pictures + 11
    while len(benign) < 3 and j < 4 * maker.p.unique_pictures + 64:
        data, ext = maker.picture(j)
        if ext == "jpg":
            benign.append(data)
        j += 1
    if len(benign) < 3:
        raise TriageError("the picture pool has too few JPEGs for the embedded controls")
    entries, out = [], []

    def add(path: str, data: bytes, inside: list[tuple[str, AlertItem | None, bytes, tuple, dict]]):
        entries.append(Entry(path, data, maker.when()))
        for kind, item, blob, (off, n), extra in inside:
            assert data[off:off + n] == blob
            out.append({"kind": kind, "alert_id": item.id if item else None,
                        "category": item.category if item else None, "container": path,
                        "path": f"{path}@{off}.jpg", "offset": off, "length": n,
                        **_hashes(blob), **extra})

    a = alerts[PDF_ITEM]
    pdf, where = containers.pdf_with_jpegs([(a.data, 480, 360)])
    add(f"{u}/Documents/Scans/scan_0042.pdf", pdf, [("exact", a, a.data, where[0], {"in": "pdf"})])
    control_pdf, where = containers.pdf_with_jpegs([(benign[0], 480, 360)])
    add(f"{u}/Documents/Scans/receipt.pdf", control_pdf,
        [("control", None, benign[0], where[0], {"in": "pdf"})])
    b = alerts[THUMBCACHE_ITEM]
    near, _ext, dist = pics.near_duplicate_within(b.image, b.pdq, "resize")
    n_pdq, n_q, n_phash = pics.perceptual(near)
    # Windows 10's format (version 32), with the "first available" entry that ends real caches
    cache, where = containers.thumbcache([benign[1], near], version=32, free=1024)

    def entry(e: containers.CacheEntry) -> dict:
        return {"in": "thumbcache", "cache_entry_hash": e.entry_hash,
                "cache_entry_id": e.identifier}
    add(f"{u}/AppData/Local/Microsoft/Windows/Explorer/thumbcache_256.db", cache,
        [("control", None, benign[1], where[0][:2], entry(where[0])),
         ("near", b, near, where[1][:2], {**entry(where[1]), "near_dup_of": b.id, "pdq": n_pdq,
                                          "pdq_distance": dist, "phash": n_phash})])
    c = alerts[EXIF_ITEM]
    photo, where = containers.jpeg_with_exif_thumbnail(benign[2], c.data)
    add(f"{u}/Pictures/Holiday/DSC_0042.jpg", photo, [("exact", c, c.data, where, {"in": "exif"})])
    control, where = containers.jpeg_with_exif_thumbnail(benign[0], benign[1])
    add(f"{u}/Pictures/Holiday/DSC_0043.jpg", control,
        [("control", None, benign[1], where, {"in": "exif"})])
    return entries, out


def plant_unallocated(image: Path, fs_type: str, items: list[bytes], block: int = 4096) -> list[int]:
    """Writes each item's bytes into blocks the volume's allocation map marks free: a file
    deleted, its inode and directory entry wiped, its content left. Returns each item's byte
    offset in the volume (block-aligned, contiguous, in the middle of the largest free run)."""
    from triage.filesystems import free_runs
    from triage.device import discover
    from triage.evidence import open_evidence
    from triage.filesystems import resolver
    with open_evidence([str(image)]) as ev:
        [vol], _ = discover(ev)
        runs = list(free_runs(ev, vol.offset, vol.fs_type or fs_type, resolver(ev).fs(vol.offset)))
    start, length = max(runs, key=lambda r: r[1])
    need = sum(len(d) + 8 * block for d in items)
    if need > length:
        raise TriageError(f"{image.name}: no free run of {need} bytes to plant into")
    at = start + (length - need) // 2
    at -= at % block
    at = max(at, start + (-start % block))
    offsets = []
    with open(image, "r+b") as fh:
        for data in items:
            fh.seek(at)
            fh.write(data)
            offsets.append(at)
            at += len(data) + 4 * block
            at += -at % block
    return offsets


# ---------------------------------------------------------------- building one device

def _model_bait(seed: int, maker: ContentMaker) -> list[Entry]:
    """Skin-toned abstract shapes (no people) that the models issue tuned to score high on
    open_nsfw (triage/synth/bait.py); one per layout, so each is a different picture."""
    from triage.synth import bait as model_bait

    out = []
    for k in range(4):
        img = model_bait.make_bait_picture(seed * len(model_bait.LAYOUTS) + k)
        data = pics.encode(img, "jpeg", model_bait.JPEG_QUALITY)
        out.append(Entry(f"/Users/{maker.user}/Pictures/Textures/tone_{k + 1:02d}.jpg", data, maker.when()))
    return out


# ---------------------------------------------------------------- videos

VIDEO_SIZE = (320, 240)
VIDEO_FPS = 10
KNOWN_VIDEO = "known-video-001"     # the video of the vPDQ alert set (alert.vpdq.txt)


def known_video(seed: int) -> tuple[bytes, list]:
    """The alert set's known video (H.264, 640x480, 12 s of six scenes) and its vPDQ frames
    as the scanner computes them (the set is what a hash-sharing partner would send)."""
    from triage.features.video import analyse_video
    from triage.synth import videos as sv

    imgs = [pics.landscape(pics.rng_for(seed, "known-video", k), 640, 480) for k in range(6)]
    data = sv.encode(sv.scenes(imgs, [2.0] * 6, (640, 480), VIDEO_FPS, seed), (640, 480),
                     VIDEO_FPS, "h264")
    return data, list(analyse_video(data, thumbnails=False).frames)


def _reencode(data: bytes, kind: str, size: tuple[int, int]) -> bytes:
    """`data` decoded and encoded again, smaller and with another codec: a re-shared copy."""
    import av

    from triage.synth import videos as sv

    with av.open(io.BytesIO(data)) as src:
        frames = [f.to_ndarray(format="rgb24", width=size[0], height=size[1])
                  for f in src.decode(video=0)]
    return sv.encode(frames, size, VIDEO_FPS, kind)


def video_content(maker: "ContentMaker", known: bytes) -> list[tuple[Entry, dict]]:
    """The videos of a device, each with its truth record: on "near_only" devices a video
    showing an alert stand-in for 3 s (H.264 MP4), a re-encode of the known video (MJPEG AVI),
    a copy cut short (H.264 MP4), and benign videos (VP9 WEBM, H.264 MP4); on "model_bait"
    devices a video of bait pictures (each held 3 s, so several frames are over the model's
    threshold); on every other device one benign video."""
    from triage.synth import bait as model_bait
    from triage.synth import videos as sv

    role, seed, u = maker.spec.role, maker.seed, f"/Users/{maker.user}/Videos"
    dev = maker.spec.id

    def scenes(tag: str, n: int) -> list:
        return [pics.landscape(pics.rng_for(seed, dev, tag, k), 480, 360) for k in range(n)]

    def make(path: str, data: bytes, kind: str, codec: str, seconds: float, **extra):
        e = Entry(path, data, maker.when())
        return e, {"kind": kind, "path": path, "codec": codec,
                   "container": sv.KINDS[codec][3], "duration": seconds, **_hashes(data),
                   **extra}

    out = []
    if role == "near_only":
        a = maker.alerts[VIDEO_ITEM]
        imgs = scenes("near", 3) + [a.image] + scenes("near-end", 1)
        data = sv.encode(sv.scenes(imgs, [2, 2, 2, 3, 2], VIDEO_SIZE, VIDEO_FPS, seed),
                         VIDEO_SIZE, VIDEO_FPS, "h264")
        out.append(make(f"{u}/holiday_clip.mp4", data, "near", "h264", 11.0, alert_id=a.id,
                        category=a.category, frames_between=[6.0, 9.0]))
        data = _reencode(known, "mjpeg", VIDEO_SIZE)
        out.append(make(f"{u}/vid_0412.avi", data, "vpdq", "mjpeg", 12.0,
                        known_video=KNOWN_VIDEO))
        full = sv.encode(sv.scenes(scenes("cut", 6), [2.0] * 6, VIDEO_SIZE, VIDEO_FPS, seed),
                         VIDEO_SIZE, VIDEO_FPS, "h264", faststart=True)
        out.append(make(f"{u}/VID_20240502_1.mp4", sv.truncate(full, 0.5), "truncated",
                        "h264", 12.0, examined_at_most=9.0))
        for name, codec, n in (("garden.webm", "vp9", 4), ("party.mp4", "h264", 3)):
            data = sv.encode(sv.scenes(scenes(name, n), [2.0] * n, VIDEO_SIZE, VIDEO_FPS, seed),
                             VIDEO_SIZE, VIDEO_FPS, codec)
            out.append(make(f"{u}/{name}", data, "benign", codec, 2.0 * n))
    elif role == "model_bait":
        imgs = [model_bait.make_bait_picture(seed * len(model_bait.LAYOUTS) + k) for k in (0, 1)]
        size = (model_bait.WIDTH // 2, model_bait.HEIGHT // 2)
        data = sv.encode(sv.scenes(imgs, [3.0, 3.0], size, VIDEO_FPS, seed), size, VIDEO_FPS,
                         "h264", quality="18")
        out.append(make(f"{u}/textures.mp4", data, "bait", "h264", 6.0))
    else:
        data = sv.encode(sv.scenes(scenes("walk", 3), [2.0] * 3, VIDEO_SIZE, VIDEO_FPS, seed),
                         VIDEO_SIZE, VIDEO_FPS, "mjpeg")
        out.append(make(f"{u}/walk.avi", data, "benign", "mjpeg", 6.0))
    return out


def build_device(seed: int, spec: DeviceSpec, profile: Profile, alerts: list[AlertItem],
                 system_files: list[tuple[str, bytes]], devices_dir: Path, work: Path,
                 progress: Progress, known: bytes = b"") -> dict:
    """Make one device's content, build its volumes, disk and container; return its truth."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "staging").mkdir(exist_ok=True)
    maker = ContentMaker(seed, spec, profile, alerts, work / "staging", progress)

    # 1. content, per file-system volume: the user's files on the first, the camera card's
    #    DCIM on the second when there is one
    fs_kinds = [k for k, _ in spec.volumes if k != "bitlocker"]
    main, dcim = maker.benign(system_files, with_camera=True)
    dcim_folder = dcim[0].path.rsplit("/", 1)[0]
    card = 1 if len(fs_kinds) > 1 else 0
    planted = plant(maker, dcim_folder, card)
    bait = _model_bait(seed, maker) if spec.role == "model_bait" else []
    videos = video_content(maker, known) if known else []
    free_items = unallocated_content(maker)
    inside_files, inside_out = embedded_content(maker)
    free_offsets: list[int] = []
    free_volume = 0
    per_fs: list[list[Entry]] = [[] for _ in fs_kinds]
    per_fs[0].extend(main + bait + inside_files + [e for e, _ in videos])
    per_fs[card].extend(dcim)
    for p in planted:
        per_fs[p.volume].append(p.entry)

    # 2. volumes and disk
    parts: list[disks.Part] = []
    placed: list[dict] = []              # per file-system volume: entry path -> Placed
    for vi, (kind, label) in enumerate(spec.volumes):
        image = work / f"vol{vi}.img"
        if kind == "bitlocker":
            disks.bitlocker_volume(image, profile.bitlocker_size, seed + vi)
        else:
            progress(f"{spec.id}: {kind} volume", vi, len(spec.volumes))
            _, where = filesystems.build(kind, per_fs[len(placed)], image, label or kind,
                                         seed * 31 + vi, work / f"fs{vi}")
            if not placed and free_items:
                free_offsets = plant_unallocated(image, kind, [d for _, _, d, _ in free_items])
                free_volume = vi
            placed.append(where)
        parts.append(disks.Part(kind, image, label))
    raw = devices_dir / f"{spec.id}.raw"
    disks.assemble(raw, parts, spec.table, seed * 97 + int(spec.id[3:]))
    media_size, media_md5 = raw.stat().st_size, _file_md5(raw)
    fs_parts = [p for p in parts if p.kind != "bitlocker"]

    # 3. truth: where TSK finds every planted item
    planted_out = []
    for k, p in enumerate(planted):
        ads = p.record.get("ads")
        where = placed[p.volume].get(p.entry.path + (f":{ads}" if ads else ""))
        planted_out.append({**p.record, "id": f"{spec.id}-p{k + 1}",
                            "volume_index": parts.index(fs_parts[p.volume]),
                            "volume_offset": fs_parts[p.volume].offset, "fs_type": fs_parts[p.volume].kind,
                            "inode": where.inode if where else None,
                            "tsk_path": where.tsk_path if where else None})
    unallocated_out = []
    for k, ((kind, item, data, extra), off) in enumerate(zip(free_items, free_offsets)):
        part = parts[free_volume]
        ext = extra.pop("ext", "jpg")
        rec = {"id": f"{spec.id}-u{k + 1}", "kind": kind, "alert_id": item.id if item else None,
               "category": item.category if item else None,
               "path": f"$Unallocated/{off}.{ext}", "volume_index": free_volume,
               "volume_offset": part.offset, "fs_type": part.kind, "offset": off,
               "length": len(data), "media_offset": part.offset + off, **_hashes(data), **extra}
        unallocated_out.append(rec)
    for rec in inside_out:
        where = placed[0].get(rec["container"])
        rec.update(volume_offset=fs_parts[0].offset, fs_type=fs_parts[0].kind,
                   inode=where.inode if where else None)
    bait_out = []
    for e in bait:
        where = placed[0].get(e.path)
        bait_out.append({"path": e.path, "volume_offset": fs_parts[0].offset,
                         "inode": where.inode if where else None,
                         "pdq_quality": pics.perceptual(e.data)[1], **_hashes(e.data)})
    videos_out = []
    for k, (e, rec) in enumerate(videos):
        where = placed[0].get(e.path)
        videos_out.append({"id": f"{spec.id}-v{k + 1}", **rec, "volume_offset": fs_parts[0].offset,
                           "fs_type": fs_parts[0].kind, "inode": where.inode if where else None})
    volumes = [{"index": vi, "offset": part.offset, "length": part.length, "label": label,
                "fs_type": None if kind == "bitlocker" else kind,
                "encrypted": "BitLocker" if kind == "bitlocker" else None}
               for vi, (part, (kind, label)) in enumerate(zip(parts, spec.volumes))]

    # 4. container
    progress(f"{spec.id}: container {spec.container}", 0, 1)
    content_bytes = sum(e.size for v in per_fs for e in v)
    segments = _containerise(raw, spec, content_bytes, devices_dir)
    shutil.rmtree(work, ignore_errors=True)
    exact = [r for r in planted_out + unallocated_out + inside_out if r["kind"] == "exact"]
    near = [r for r in planted_out + unallocated_out + inside_out if r["kind"] == "near"]
    near += [v for v in videos_out if v["kind"] in ("near", "vpdq")]
    return {
        "id": spec.id,
        "role": spec.role,
        "description": spec.kind,
        "evidence": str(segments[0].relative_to(devices_dir.parent)),
        "segments": [str(s.relative_to(devices_dir.parent)) for s in segments],
        "format": {"raw": "raw", "split_raw": "split_raw", "split_raw_aa": "split_raw",
                   "e01": "ewf", "e01_split": "ewf"}[spec.container],
        "media_size": media_size,
        "media_md5": media_md5,
        "partition_table": spec.table,
        "volumes": volumes,
        "encrypted_volumes": [v["offset"] for v in volumes if v["encrypted"]],
        "user": maker.user,
        "camera": {"make": maker.camera.make, "model": maker.camera.model} if maker.camera else None,
        "files": sum(len(v) for v in per_fs),
        "clean": spec.role == "clean",
        "planted": planted_out,
        # only in free space: no file system names them; carving finds them
        "unallocated": unallocated_out,
        # inside other files (a PDF, a thumbnail cache, a JPEG's EXIF thumbnail)
        "embedded": inside_out,
        "model_bait": bait_out,
        # videos: kind near (an alert stand-in shown between frames_between seconds), vpdq (a
        # re-encode of the alert set's known video), truncated, bait (model), benign
        "videos": videos_out,
        "expect": {"exact_matches": len(exact), "near_matches": len(near),
                   "exact_md5s": sorted({r["md5"] for r in exact}),
                   # free and unpartitioned space is carved and a PDF's images decoded: a
                   # locked volume and a video cut short (its frames examined only in part)
                   # are what is left unexamined
                   "coverage": "partial" if any(k == "bitlocker" for k, _ in spec.volumes)
                   or any(v["kind"] == "truncated" for v in videos_out) else "complete"},
    }


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _containerise(raw: Path, spec: DeviceSpec, content_bytes: int, devices_dir: Path) -> list[Path]:
    """Wrap the raw disk as the spec says. Split sets get 3-4 segments (split raw by media size,
    E01 by content, since empty space compresses to almost nothing)."""
    media_size = raw.stat().st_size
    c = spec.container
    if c == "raw":
        return [raw]
    if c.startswith("split_raw"):
        sub = devices_dir / spec.id
        sub.mkdir(exist_ok=True)
        moved = sub / raw.name
        raw.rename(moved)
        seg = max(MiB, (media_size // 3 + MiB - 1) // MiB * MiB)    # three or four segments
        return disks.to_split_raw(moved, seg, "aa" if c.endswith("aa") else "000")
    if c.startswith("e01"):
        split = c == "e01_split"
        target_dir = devices_dir / spec.id if split else devices_dir
        target_dir.mkdir(exist_ok=True)
        moved = target_dir / raw.name
        raw.rename(moved)
        seg = max(MiB, content_bytes // 3 // MiB * MiB) if split else None
        return disks.to_e01(moved, seg, case="SYNTH", evidence=spec.id,
                            description=f"synthetic {spec.kind} ({spec.role})")
    raise ValueError(c)


# ---------------------------------------------------------------- hash sets and context

def write_vics(path: Path, alerts: list[AlertItem]) -> None:
    value = []
    for i, a in enumerate(alerts, 1):
        h = _hashes(a.data)
        value.append({"MediaID": i, "Category": a.category, "MD5": h["md5"].upper(),
                      "SHA1": h["sha1"].upper(), "MediaSize": h["size"], "MimeType": "image/jpeg",
                      "IsPrecategorized": True, "PrecategorizationSource": "triage synth",
                      "DateUpdated": "2025-01-15T09:30:00.000Z",
                      "Comments": "synthetic stand-in, not real material",
                      "Tags": f"CAID grade {CAID_GRADES[a.category]}"})
    path.write_text(json.dumps({"@odata.context": VICS_CONTEXT, "value": value}, indent=1) + "\n",
                    encoding="utf-8")


NSRL_SCHEMA = """
CREATE TABLE FILE (sha256 VARCHAR NOT NULL, sha1 VARCHAR NOT NULL, md5 VARCHAR NOT NULL,
  crc32 VARCHAR NOT NULL, file_name VARCHAR NOT NULL, file_size INTEGER NOT NULL,
  package_id INTEGER NOT NULL,
  CONSTRAINT PK_FILE__FILE PRIMARY KEY (sha256, sha1, md5, file_name, file_size, package_id));
CREATE TABLE MFG (manufacturer_id INTEGER NOT NULL, name VARCHAR NOT NULL);
CREATE TABLE OS (operating_system_id INTEGER NOT NULL, name VARCHAR NOT NULL, version VARCHAR NOT NULL,
  manufacturer_id INTEGER NOT NULL);
CREATE TABLE PKG (package_id INTEGER NOT NULL, name VARCHAR NOT NULL, version VARCHAR NOT NULL,
  operating_system_id INTEGER NOT NULL, manufacturer_id INTEGER NOT NULL, language VARCHAR NOT NULL,
  application_type VARCHAR NOT NULL);
CREATE TABLE VERSION (version VARCHAR UNIQUE NOT NULL, build_set VARCHAR NOT NULL,
  build_date TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL, release_date TIMESTAMP NOT NULL,
  description VARCHAR NOT NULL);
CREATE VIEW DISTINCT_HASH AS SELECT DISTINCT sha256, sha1, md5, crc32 FROM FILE;
"""


def write_nsrl(path: Path, system_files: list[tuple[str, bytes]]) -> None:
    """NSRL RDSv3 'minimal' layout (formats.md 2.2): FILE table plus the DISTINCT_HASH view."""
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.executescript(NSRL_SCHEMA)
    con.execute("INSERT INTO MFG VALUES (1, 'Synthetic Software Ltd')")
    con.execute("INSERT INTO OS VALUES (1, 'Windows', '10', 1)")
    con.execute("INSERT INTO PKG VALUES (1, 'Synthetic Windows Base', '10.0', 1, 1, 'English', 'Operating System')")
    con.execute("INSERT INTO VERSION VALUES ('2025.03.1', 'modern', '2025-03-01 00:00:00', "
                "'2025-03-01 00:00:00', 'triage synth minimal set')")
    for name, data in system_files:
        h = _hashes(data)
        con.execute("INSERT INTO FILE VALUES (?,?,?,?,?,?,?)",
                    (h["sha256"].upper(), h["sha1"].upper(), h["md5"].upper(), pics.crc32_hex(data),
                     name, h["size"], 1))
    con.commit()
    con.close()


def write_perceptual(out: Path, alerts: list[AlertItem]) -> None:
    (out / "alert.pdq.txt").write_text("".join(f"{a.pdq},{a.pdq_quality},{a.name}\n" for a in alerts))
    (out / "alert.phash.txt").write_text("".join(f"{a.phash}\n" for a in alerts))


def write_vpdq(path: Path, name: str, frames: list) -> None:
    """The vPDQ alert set: the known video's frames in ThreatExchange's line format."""
    from triage.features.video import vpdq_lines
    path.write_text(f"# video: {name}\n" + "".join(line + "\n" for line in vpdq_lines(frames)))


def context_rows(seed: int, devices: list[dict], specs: list[DeviceSpec]) -> list[dict]:
    rows = []
    for d, s in zip(devices, specs):
        n = int(s.id[3:])
        # the exact-match devices share a deadline, so only their access context differs
        if s.role == "exact":
            deadline = "2026-12-18"
        else:
            deadline = (dt.date(2026, 12, 1) + dt.timedelta(days=7 * n)).isoformat() if n % 2 else ""
        rows.append({"evidence": Path(d["evidence"]).name, "exhibit": f"SYN/{seed}/{n:02d}",
                     "suspect": f"Suspect {chr(64 + n) if n <= 26 else n}",
                     "access_to_children": s.access, "custody_deadline": deadline,
                     "notes": f"synthetic {s.kind}"})
    return rows


def rank_constraints(devices: list[dict], context: list[dict]) -> list[dict]:
    """Which device must rank above which (issue 6): exact > near-only > encrypted > clean, and
    lives_with > none between devices that are otherwise equal."""
    tier = {"exact": 3, "near_only": 2, "encrypted": 1, "clean": 0}
    out = []
    for a in devices:
        for b in devices:
            ta, tb = tier.get(a["role"]), tier.get(b["role"])
            if ta is not None and tb is not None and ta > tb:
                out.append({"above": a["id"], "below": b["id"], "rule": f"{a['role']} > {b['role']}"})
            elif a["role"] in ("exact", "near_only") and b["role"] == "model_bait":
                out.append({"above": a["id"], "below": b["id"], "rule": f"{a['role']} > model_bait"})
    access = {d["id"]: c["access_to_children"] for d, c in zip(devices, context)}
    exact = [d for d in devices if d["role"] == "exact"]
    for a in exact:
        for b in exact:
            same = ([(p["alert_id"], p["kind"], p["deleted"]) for p in a["planted"]]
                    == [(p["alert_id"], p["kind"], p["deleted"]) for p in b["planted"]]
                    and len(a["volumes"]) == len(b["volumes"]))
            if same and access[a["id"]] == "lives_with" and access[b["id"]] == "none":
                out.append({"above": a["id"], "below": b["id"], "rule": "lives_with > none (otherwise equal)"})
    return out


# ---------------------------------------------------------------- the fleet

def ntfs_available() -> bool:
    try:
        from triage.synth import ntfs
    except ImportError:
        return False
    return ntfs.available()


def build_fleet(out: Path, devices: int = 6, seed: int = 1, size: str = "small",
                progress: Optional[Progress] = None) -> dict:
    """Build the fleet into `out` and return the truth (also written to out/truth.json)."""
    if size not in PROFILES:
        raise TriageError(f"unknown size {size!r}: choose small, medium or large")
    if devices < 1:
        raise TriageError("--devices must be at least 1")
    progress = progress or (lambda stage, done, total: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    devices_dir = out / "devices"
    if devices_dir.exists():
        shutil.rmtree(devices_dir)
    devices_dir.mkdir()
    work = out / ".work"
    shutil.rmtree(work, ignore_errors=True)

    profile = PROFILES[size]
    progress("alert set", 0, 1)
    alerts = make_alert_set(seed)
    known, known_frames = known_video(seed)
    small = PROFILES["small"]
    specs = plan_devices(devices, size, ntfs_available())
    records = []
    for i, spec in enumerate(specs):
        prof = profile if (size != "large" or i == 0) else small
        sys_prof = prof
        system_files = [system_file(seed, k, *sys_prof.system_size) for k in range(sys_prof.system_files)]
        progress(f"{spec.id}: content", i, len(specs))
        records.append(build_device(seed, spec, prof, alerts, system_files, devices_dir,
                                    work / spec.id, progress, known))
    shutil.rmtree(work, ignore_errors=True)

    all_system = {}
    for i in range(len(specs)):
        prof = profile if (size != "large" or i == 0) else small
        for k in range(prof.system_files):
            name, data = system_file(seed, k, *prof.system_size)
            all_system[hashlib.md5(data).hexdigest()] = (name, data)
    write_vics(out / "alert.vics.json", alerts)
    write_nsrl(out / "nsrl.db", list(all_system.values()))
    write_perceptual(out, alerts)
    write_vpdq(out / "alert.vpdq.txt", KNOWN_VIDEO, known_frames)
    ctx = context_rows(seed, records, specs)
    with open(out / "context.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ctx[0]))
        w.writeheader()
        w.writerows(ctx)
    for d, c in zip(records, ctx):
        d["context"] = c
    (out / "evidence.txt").write_text("".join(f"{(out / d['evidence']).resolve()}\n" for d in records))
    truth = {
        "generator": f"triage synth {__version__}",
        "seed": seed,
        "size": size,
        "pdq_match_threshold": pics.PDQ_MATCH,
        "hashsets": {"alert_vics": "alert.vics.json", "nsrl": "nsrl.db", "alert_pdq": "alert.pdq.txt",
                     "alert_phash": "alert.phash.txt", "alert_vpdq": "alert.vpdq.txt",
                     "context": "context.csv",
                     "vics_profile": "UK", "category_map": {str(k): v for k, v in CAID_GRADES.items()}},
        "alerts": [a.record() for a in alerts],
        "known_videos": [{"name": KNOWN_VIDEO, "frames": len(known_frames),
                          **_hashes(known)}],
        "nsrl_files": len(all_system),
        "devices": records,
        "rank_order": rank_constraints(records, ctx),
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth
