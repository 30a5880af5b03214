#!/bin/sh
# The reference listings of the public APFS and LVM test images (tests/data/dfvfs/more), made
# with Debian's The Sleuth Kit 4.11 command-line tools, the independent reader the
# conformance tests compare triage with. Run from the repository root:
#     sh tests/data/reference/make_references.sh
# Each line: inode <TAB> size <TAB> md5 of icat's output ('-' for folders and links) <TAB> path.
#
# APFS: TSK reads the pool itself (-P apfs); -B is the volume superblock's block number, as
# `pstat tests/data/dfvfs/more/apfs.raw` prints it (107: the one volume, "apfs_test").
#
# LVM: TSK has no LVM support. The logical volume's bytes are taken out of the QCOW2 image with
# qemu-img-free tools: libyal's own readers (pyqcow for the container, pyvslvm for the
# volume group's one linear logical volume), written to a temporary raw file; TSK then reads
# that raw file, so the file-system listing and content are TSK's, not libyal's.
set -eu
OUT=tests/data/reference
IMG=tests/data/dfvfs/more
PY=${PY:-.venv/bin/python}

listing() {   # listing FLS_ARGS... ; prints the reference lines for one file system
    fls -r -p -m / "$@" | while IFS='|' read -r _ name inode mode _uid _gid size _rest; do
        name=${name%% -> *}
        case "$mode" in
            r/*) md5=$(icat "$@" "$inode" | md5sum | cut -d' ' -f1) ;;
            *) md5=- ;;
        esac
        printf '%s\t%s\t%s\t%s\n' "$inode" "$size" "$md5" "$name"
    done | LC_ALL=C sort -t "$(printf '\t')" -k4
}

listing -P apfs -B 107 "$IMG/apfs.raw" > "$OUT/apfs.raw.tsk"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" - "$IMG/lvm.qcow2" "$TMP/lv0.raw" <<'PYEOF'
import sys, pyqcow, pyvslvm
q = pyqcow.file(); q.open(sys.argv[1])
h = pyvslvm.handle(); h.open_file_object(q); h.open_physical_volume_files_as_file_objects([q])
lv = h.get_volume_group().get_logical_volume(0)
with open(sys.argv[2], "wb") as out:
    done = 0
    while done < lv.size:
        data = lv.read_buffer_at_offset(min(1 << 20, lv.size - done), done)
        out.write(data)
        done += len(data)
PYEOF
listing "$TMP/lv0.raw" > "$OUT/lvm.qcow2.lv0.tsk"
