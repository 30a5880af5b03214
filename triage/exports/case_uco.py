"""CASE/UCO JSON-LD (CASE 1.5): what was scanned, by whom and with what, and what was found.

The graph holds:
* the tool (`uco-tool:AnalyticTool` "triage", its version, the hash sets and model it used as
  a `uco-configuration:Configuration`) and the operator (`uco-identity:Identity`);
* per device, the evidence (`uco-observable:File` per segment, and a ProvenanceRecord with
  the exhibit number) and the scan as a `case-investigation:InvestigativeAction` with start
  and end times, instrument, performer, the evidence as object and the results as result;
* each matched or suspected file as a `uco-observable:File` with FileFacet (name, path, size,
  times, allocation status) and ContentDataFacet (MD5, SHA1, SHA256 as xsd:hexBinary), tied
  to its device by a "Contained_Within" ObservableRelationship whose description is the
  provenance chain (volume offset, inode, stream, archive member);
* each match as a `uco-analysis:Analysis` on that file with an `AnalyticResult` whose
  ArtifactClassificationResultFacet gives the class ("caid 2025 Category A (exact md5)") and a
  confidence: 1 for an exact hash, 1 - distance/256 for PDQ, 1 - distance/64 for pHash, the
  model's score for SUSPECTED_NEW (a ranking aid, not evidence).

Identifiers are uuid5 from the case's own keys, so exporting twice gives the same graph.
Validate with `case_validate` from the PyPI package case-utils.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Optional

from triage import __version__
from triage.exports import iso_utc, private_output
from triage.classify import category_text
from triage.findings import Finding, findings
from triage.flags import display_path
from triage.rank import category_labels

CONTEXT = {
    "kb": "http://example.org/kb/",
    "case-investigation": "https://ontology.caseontology.org/case/investigation/",
    "uco-action": "https://ontology.unifiedcyberontology.org/uco/action/",
    "uco-analysis": "https://ontology.unifiedcyberontology.org/uco/analysis/",
    "uco-configuration": "https://ontology.unifiedcyberontology.org/uco/configuration/",
    "uco-core": "https://ontology.unifiedcyberontology.org/uco/core/",
    "uco-identity": "https://ontology.unifiedcyberontology.org/uco/identity/",
    "uco-observable": "https://ontology.unifiedcyberontology.org/uco/observable/",
    "uco-tool": "https://ontology.unifiedcyberontology.org/uco/tool/",
    "uco-types": "https://ontology.unifiedcyberontology.org/uco/types/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
HASH_METHODS = (("md5", "MD5"), ("sha1", "SHA1"), ("sha256", "SHA256"))
_NEAR_BITS = {"pdq": 256, "phash": 64}


class _Graph:
    def __init__(self, namespace: str):
        self.nodes: list[dict] = []
        self.ns = uuid.uuid5(uuid.NAMESPACE_URL, namespace)

    def iri(self, kind: str, *key) -> str:
        return f"kb:{kind}-{uuid.uuid5(self.ns, kind + '|' + '|'.join(map(str, key)))}"

    def add(self, node: dict) -> dict:
        self.nodes.append(node)
        return node


def _time(t: Optional[float]) -> Optional[dict]:
    text = iso_utc(t)
    return {"@type": "xsd:dateTime", "@value": text} if text else None


def _hashes(g: _Graph, owner_key: str, values: dict) -> list[dict]:
    out = []
    for algo, method in HASH_METHODS:
        value = (values.get(algo) or "").lower()
        if value:
            out.append({"@id": g.iri("Hash", owner_key, algo), "@type": "uco-types:Hash",
                        "uco-types:hashMethod": method,
                        "uco-types:hashValue": {"@type": "xsd:hexBinary", "@value": value}})
    return out


def _confidence(f: Finding, match=None, score=None) -> str:
    if match is not None:
        if match.kind == "exact":
            return "1.0"
        bits = _NEAR_BITS.get(match.algorithm, 256)
        return f"{max(0.0, 1 - match.distance / bits):.4f}"
    values = [v for v in (score.values or {}).values() if isinstance(v, (int, float))
              and not isinstance(v, bool) and v == v]
    return f"{max(values) if values else 0.0:.4f}"


def _strip(node: dict) -> dict:
    return {k: v for k, v in node.items() if v not in (None, [], "")}


def build(store, device_id: Optional[str] = None) -> dict:
    g = _Graph(f"triage:{store.case_dir.resolve()}")
    runs = store.runs()
    devices = [d for d in store.devices() if device_id is None or d["id"] == device_id]
    labels = category_labels(store)

    # the tool, configured with the hash sets and model of the runs
    entries = []
    for run in runs:
        for hs in run.get("hashsets") or []:
            text = " ".join(str(hs.get(k, "")) for k in ("name", "version", "role")).strip()
            entries.append(("hashset", text))
        if run.get("model"):
            m = run["model"]
            entries.append(("model", f"{m.get('name', '')} {m.get('version', '')} sha256 "
                                     f"{m.get('sha256', '')}".strip()))
    config = None
    if entries:
        config = {"@id": g.iri("Configuration", "tool"), "@type": "uco-configuration:Configuration",
                  "uco-configuration:configurationEntry": [
                      {"@id": g.iri("ConfigurationEntry", i, name, value),
                       "@type": "uco-configuration:ConfigurationEntry",
                       "uco-configuration:itemName": name, "uco-configuration:itemValue": value}
                      for i, (name, value) in enumerate(sorted(set(entries)))]}
    # the case itself, by its reference (--case-ref, else the case folder's name)
    g.add({"@id": g.iri("Investigation", store.case_ref()),
           "@type": "case-investigation:Investigation", "uco-core:name": store.case_ref()})
    tool_id = g.iri("AnalyticTool", "triage", __version__)
    g.add(_strip({"@id": tool_id,
                  "@type": ["uco-tool:AnalyticTool", "uco-tool:ConfiguredTool"] if config
                  else "uco-tool:AnalyticTool",
                  "uco-core:name": "triage", "uco-tool:toolType": "digital triage",
                  "uco-tool:version": __version__,
                  "uco-configuration:usesConfiguration": config}))
    operators = sorted({r.get("operator") or "unknown" for r in runs}) or [
        os.environ.get("USER", "unknown")]
    performer = {op: g.iri("Identity", op) for op in operators}
    for op, iri in performer.items():
        g.add({"@id": iri, "@type": "uco-identity:Identity", "uco-core:name": op})

    run_start = min((r["started"] for r in runs), default=None)
    run_end = max((r["ended"] for r in runs if r.get("ended")), default=None)
    n_files = n_results = 0
    for dev in devices:
        ctx = dev.get("context") or {}
        evidence = []
        for i, path in enumerate(dev["paths"]):
            fid = g.iri("File", dev["id"], "segment", i)
            facets = [_strip({"@id": g.iri("FileFacet", dev["id"], "segment", i),
                              "@type": "uco-observable:FileFacet",
                              "uco-observable:fileName": os.path.basename(path),
                              "uco-observable:filePath": path})]
            g.add({"@id": fid, "@type": "uco-observable:File", "uco-core:hasFacet": facets})
            evidence.append({"@id": fid})
        media_hashes = dict(dev.get("stored_hashes") or {})
        media_hashes.update(dev.get("verified_hashes") or {})
        media_id = g.iri("Image", dev["id"])
        g.add({"@id": media_id, "@type": "uco-observable:Image",
               "uco-core:name": dev["id"],
               "uco-core:description": f"seized device {dev['id']} ({dev.get('format', '')}, "
                                       f"{dev.get('media_size', 0)} bytes of media)",
               "uco-core:hasFacet": [_strip({
                   "@id": g.iri("ContentDataFacet", dev["id"], "media"),
                   "@type": "uco-observable:ContentDataFacet",
                   "uco-observable:sizeInBytes": int(dev.get("media_size") or 0),
                   "uco-observable:hash": _hashes(g, dev["id"] + "|media", media_hashes)})]})
        for seg in evidence:
            g.add({"@id": g.iri("ObservableRelationship", dev["id"], seg["@id"]),
                   "@type": "uco-observable:ObservableRelationship",
                   "uco-core:source": [{"@id": media_id}], "uco-core:target": seg,
                   "uco-core:kindOfRelationship": "Contained_Within",
                   "uco-core:isDirectional": True})
        evidence_record = g.iri("ProvenanceRecord", dev["id"], "evidence")
        g.add(_strip({"@id": evidence_record, "@type": "case-investigation:ProvenanceRecord",
                      "case-investigation:exhibitNumber": ctx.get("exhibit") or None,
                      "uco-core:description": f"evidence of device {dev['id']}",
                      "uco-core:object": [{"@id": media_id}] + evidence}))

        results = []
        found = findings(store, dev["id"])
        for f in found:
            n_files += 1
            key = f.key
            rec, feat, p = f.record, f.features, f.record.prov
            file_id = g.iri("File", key)
            name = rec.name if not p.members else p.members[-1].rsplit("/", 1)[-1]
            path = display_path(p)
            g.add({"@id": file_id, "@type": "uco-observable:File", "uco-core:hasFacet": [
                _strip({"@id": g.iri("FileFacet", key), "@type": "uco-observable:FileFacet",
                        "uco-observable:fileName": name, "uco-observable:filePath": path,
                        "uco-observable:sizeInBytes": int(rec.size),
                        "uco-observable:isDirectory": False,
                        "uco-observable:allocationStatus": "Allocated" if rec.allocated else "Deleted",
                        "uco-observable:modifiedTime": _time(rec.mtime),
                        "uco-observable:accessedTime": _time(rec.atime),
                        "uco-observable:metadataChangeTime": _time(rec.ctime),
                        "uco-observable:observableCreatedTime": _time(rec.crtime)}),
                _strip({"@id": g.iri("ContentDataFacet", key), "@type": "uco-observable:ContentDataFacet",
                        "uco-observable:sizeInBytes": int(rec.size),
                        "uco-observable:mimeType": feat.type or rec.type or None,
                        "uco-observable:hash": _hashes(g, key, {"md5": feat.md5, "sha1": feat.sha1,
                                                                "sha256": feat.sha256})})]})
            g.add({"@id": g.iri("ObservableRelationship", key),
                   "@type": "uco-observable:ObservableRelationship",
                   "uco-core:source": [{"@id": file_id}], "uco-core:target": {"@id": media_id},
                   "uco-core:kindOfRelationship": "Contained_Within",
                   "uco-core:isDirectional": True,
                   "uco-core:description": (f"volume offset {p.volume_offset}, inode {p.inode}, "
                                            f"path {display_path(p, member=False)}"
                                            + (f", archive member {p.member}" if p.member else ""))})
            results.append({"@id": file_id})
            analyses = [(m, None) for m in f.matches]
            if f.suspected:
                analyses += [(None, s) for s in f.scores]
            for m, s in analyses:
                n_results += 1
                if m is not None:
                    label = (f"{m.set_name} {m.set_version} "
                             f"{category_text(labels, m.set_name, m.category) or 'no category'} "
                             f"({m.kind} {m.algorithm}"
                             + (f", distance {m.distance})" if m.kind != "exact" else ")")
                             + (f"; {m.video_text}" if m.video_text else ""))
                    what = f"{m.kind} {m.algorithm} hash lookup in {m.set_name} {m.set_version}"
                    akey = (key, m.kind, m.algorithm, m.set_name, m.value)
                else:
                    label = (f"suspected new material ({s.model}; a ranking aid, not evidence)"
                             + (f"; frames at {f.frame_text}" if f.frames else ""))
                    what = f"model {s.model} sha256 {s.model_sha256}"
                    akey = (key, "model", s.model)
                analysis_id = g.iri("Analysis", *akey)
                result_id = g.iri("AnalyticResult", *akey)
                g.add(_strip({"@id": analysis_id, "@type": "uco-analysis:Analysis",
                              "uco-core:name": what,
                              "uco-action:instrument": {"@id": tool_id},
                              "uco-action:object": [{"@id": file_id}],
                              "uco-action:result": [{"@id": result_id}]}))
                g.add({"@id": result_id, "@type": "uco-analysis:AnalyticResult",
                       "uco-analysis:originatingAnalysis": {"@id": analysis_id},
                       "uco-core:hasFacet": [{
                           "@id": g.iri("ArtifactClassificationResultFacet", *akey),
                           "@type": "uco-analysis:ArtifactClassificationResultFacet",
                           "uco-analysis:classification": [{
                               "@id": g.iri("ArtifactClassification", *akey),
                               "@type": "uco-analysis:ArtifactClassification",
                               "uco-analysis:class": label,
                               "uco-analysis:classificationConfidence": {
                                   "@type": "xsd:decimal", "@value": _confidence(f, m, s)}}]}]})
        result_record = g.iri("ProvenanceRecord", dev["id"], "results")
        g.add(_strip({"@id": result_record, "@type": "case-investigation:ProvenanceRecord",
                      "case-investigation:exhibitNumber": ctx.get("exhibit") or None,
                      "uco-core:description": f"files of interest found on device {dev['id']}",
                      "uco-core:object": results or [{"@id": media_id}]}))
        g.add(_strip({
            "@id": g.iri("InvestigativeAction", dev["id"]),
            "@type": "case-investigation:InvestigativeAction",
            "uco-core:name": "triage scan",
            "uco-core:description": f"hash, match and score every file of device {dev['id']} "
                                    f"(scan status {dev.get('status', '')})",
            "uco-action:startTime": _time(dev.get("started") or run_start),
            "uco-action:endTime": _time(dev.get("finished") or run_end),
            "uco-action:instrument": {"@id": tool_id},
            "uco-action:performer": {"@id": performer[operators[-1]]},
            "uco-action:object": [{"@id": evidence_record}],
            "uco-action:result": [{"@id": result_record}]}))
    return {"@context": CONTEXT, "@graph": g.nodes,
            "_summary": f"{len(devices)} devices, {n_files} files, {n_results} analytic results"}


def write_case(store, out, device_id: Optional[str] = None) -> str:
    doc = build(store, device_id)
    summary = doc.pop("_summary")
    with private_output(out) as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return summary
