"""The lean path for many small files (issue 19, "a million files"): each shortcut gives
exactly what the general path gives."""
from __future__ import annotations

import json
import random

from triage.records import Provenance


def _general_key(prov: Provenance) -> str:
    return json.dumps(prov._key_parts(), separators=(",", ":"), ensure_ascii=False)


def _hostile_text(rng: random.Random) -> str:
    alphabet = ["a", "/", "\\", '"', "\x00", "\x1b", "\n", "\u202e", "\ud800", "\udfff", "é",
                "\U0001f600", " ", "'", "\x7f", "\u2028"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))


def test_provenance_key_fast_path_is_the_json_key():
    rng = random.Random(19)
    for _ in range(3000):
        prov = Provenance(device_id=_hostile_text(rng),
                          volume_offset=rng.choice([None, 0, 1 << 40, -1, 512]),
                          inode=rng.choice([None, 0, 7, (1 << 63) + 5]),
                          path=_hostile_text(rng), volume_index=rng.choice([None, 3]),
                          fs_type=rng.choice(["", "ext4"]))
        assert prov.key == _general_key(prov)
        json.loads(prov.key)


def test_provenance_key_with_any_extra_field_keeps_the_general_form():
    base = Provenance(device_id="d", volume_offset=0, inode=5, path="/a")
    variants = [dict(ads="s"), dict(attr_type=128, attr_id=3), dict(members=("m",)),
                dict(snapshot="vss1"), dict(parent=base, offset=3, length=4), dict(length=9),
                dict(decoded="FlateDecode"), dict(frame=2, frame_time=0.5)]
    for kw in variants:
        prov = Provenance(device_id="d", volume_offset=0, inode=5, path="/a", **kw)
        assert prov.key == _general_key(prov)
        assert prov.key != base.key
    # a bool is no plain number: json writes it "true", so it takes the general path
    odd = Provenance(device_id="d", volume_offset=True, inode=False, path="/a")
    assert odd.key == _general_key(odd) == '["d",true,false,"/a"]'
