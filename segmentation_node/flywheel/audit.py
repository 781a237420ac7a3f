"""workcell_audit: the small human audit that stands between pseudo-labels and training.

Per shard a reproducible random sample of images is drawn as an overlay contact sheet
(`audit.html`, self-contained: open it in any browser) and recorded in `audit.json` with one
accept / reject decision per sample. Once every sample is decided the shard's verdict is
`rejected` if more than `max_reject_share` of them were rejected, else `accepted`. Training
refuses shards that are not `accepted`: a poisoned shard never reaches a model.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import random
import sys
import time
from pathlib import Path

import cv2
from pycocotools import mask as coco_mask

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.contract import Role
from segmentation_node.masks import BoxedMask
from segmentation_node.flywheel.shards import ANNOTATIONS, SHARD_INFO, list_shards
from segmentation_node.overlay import OverlayItem, draw_overlay

AUDIT_FILE, SHEET_FILE = "audit.json", "audit.html"
PENDING, ACCEPTED, REJECTED, UNAUDITED = "pending", "accepted", "rejected", "unaudited"
THUMBNAIL_WIDTH = 480


class AuditError(ValueError):
    pass


def audit_verdict(shard: Path) -> str:
    path = Path(shard) / AUDIT_FILE
    return json.loads(path.read_text())["verdict"] if path.is_file() else UNAUDITED


def create_audit(shard: Path, samples: int = 12, max_reject_share: float = 0.1) -> Path:
    """Draw the sample and write the contact sheet; an existing audit is kept (decisions are records)."""
    shard = Path(shard)
    if (shard / AUDIT_FILE).is_file():
        raise AuditError(f"{shard.name} already has an audit ({audit_verdict(shard)}); decisions are never redrawn")
    if not 0.0 <= max_reject_share < 1.0:
        raise AuditError(f"max_reject_share must be in [0, 1), got {max_reject_share}")
    dataset = _dataset(shard)
    shard_id = json.loads((shard / SHARD_INFO).read_text())["shard_id"]
    # Seeded by the shard id: the same shard always gets the same sample, whoever draws it.
    chosen = sorted(random.Random(shard_id).sample(range(len(dataset["images"])),
                                                   min(samples, len(dataset["images"]))))
    audit = {"shard_id": shard_id, "verdict": PENDING, "max_reject_share": max_reject_share,
             "created_ns": time.time_ns(), "reviewer": "", "samples": [
                 {"image_id": dataset["images"][i]["id"], "file_name": dataset["images"][i]["file_name"],
                  "decision": None} for i in chosen]}
    atomic_write_bytes(shard / SHEET_FILE, _contact_sheet(shard, dataset, audit).encode())
    atomic_write_bytes(shard / AUDIT_FILE, json.dumps(audit, indent=1).encode())
    return shard / SHEET_FILE


def record_decisions(shard: Path, reviewer: str, rejected: set[int], accept_rest: bool,
                     accepted: set[int] = frozenset()) -> dict:
    """Record decisions by image id; `accept_rest` accepts every sample not rejected."""
    shard = Path(shard)
    if not reviewer.strip():
        raise AuditError("a reviewer name is required: the audit is a record of who checked what")
    path = shard / AUDIT_FILE
    if not path.is_file():
        raise AuditError(f"{shard.name} has no audit yet: run `workcell_audit sheet {shard}` first")
    audit = json.loads(path.read_text())
    ids = {sample["image_id"] for sample in audit["samples"]}
    unknown = (set(rejected) | set(accepted)) - ids
    if unknown:
        raise AuditError(f"image ids {sorted(unknown)} are not in this audit's sample {sorted(ids)}")
    for sample in audit["samples"]:
        if sample["image_id"] in rejected:
            sample["decision"] = REJECTED
        elif sample["image_id"] in accepted or accept_rest:
            sample["decision"] = ACCEPTED
    audit["reviewer"] = reviewer.strip()
    decided = [s["decision"] for s in audit["samples"]]
    if None in decided:
        audit["verdict"] = PENDING
    else:
        share = decided.count(REJECTED) / max(len(decided), 1)
        audit["verdict"] = REJECTED if share > audit["max_reject_share"] else ACCEPTED
        audit["rejected_share"] = share
        audit["decided_ns"] = time.time_ns()
    atomic_write_bytes(path, json.dumps(audit, indent=1).encode())
    return audit


def _dataset(shard: Path) -> dict:
    path = shard / ANNOTATIONS
    if not path.is_file():
        raise AuditError(f"{shard} is not a sealed shard (no {ANNOTATIONS})")
    return json.loads(path.read_text())


def _contact_sheet(shard: Path, dataset: dict, audit: dict) -> str:
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    by_image: dict[int, list[dict]] = {}
    for annotation in dataset["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    images = {image["id"]: image for image in dataset["images"]}
    cells = []
    for sample in audit["samples"]:
        image = images[sample["image_id"]]
        rgb = cv2.cvtColor(cv2.imread(str(shard / image["file_name"])), cv2.COLOR_BGR2RGB)
        items = [OverlayItem(BoxedMask.from_array(coco_mask.decode({"size": a["segmentation"]["size"],
                                                                   "counts": a["segmentation"]["counts"].encode()})),
                             Role[a["role"].upper()], f"{names[a['category_id']]}#{a['track_id']} {a['score']:.2f}")
                 for a in by_image.get(image["id"], [])]
        picture = draw_overlay(rgb, items)
        scale = THUMBNAIL_WIDTH / picture.shape[1]
        picture = cv2.resize(picture, (THUMBNAIL_WIDTH, int(picture.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        data = base64.b64encode(jpeg.tobytes()).decode()
        caption = html.escape(f"image {image['id']} · {image['camera']} · frame {image['frame_index']}")
        cells.append(f'<figure><img src="data:image/jpeg;base64,{data}"><figcaption>{caption}<br>'
                     f'<label><input type="checkbox" class="reject" value="{image["id"]}"> reject</label>'
                     f'</figcaption></figure>')
    title = html.escape(f"Audit {audit['shard_id']}")
    command = html.escape(f"workcell_audit decide {shard} --reviewer YOU --reject IDS --accept-rest")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:sans-serif;margin:1em}} figure{{display:inline-block;margin:.4em;vertical-align:top}}
figcaption{{font-size:.85em}} code{{background:#eee;padding:.2em}}</style></head><body>
<h1>{title}</h1><p>{len(audit['samples'])} of {len(dataset['images'])} images drawn at random.
Green: targets, red: forbidden, grey: ignored. Tick every image whose masks are wrong
(a missed part, a mask on the wrong object, a wrong class). The shard is rejected when more than
{audit['max_reject_share']:.0%} of the sample is rejected.</p>
<p>Record: <code id="command">{command}</code></p>
{''.join(cells)}
<script>
for (const box of document.querySelectorAll('.reject')) box.addEventListener('change', () => {{
  const ids = [...document.querySelectorAll('.reject:checked')].map(b => b.value).join(',');
  document.getElementById('command').textContent =
    {json.dumps(f"workcell_audit decide {shard} --reviewer YOU ")} + (ids ? '--reject ' + ids + ' ' : '') + '--accept-rest';
}});
</script></body></html>
"""


def _ids(text: str) -> set[int]:
    try:
        return {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated image ids, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_audit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="sealed shards of a flywheel directory and their audit verdicts")
    listing.add_argument("root", type=Path)
    sheet = commands.add_parser("sheet", help="draw a shard's sample and write audit.html")
    sheet.add_argument("shard", type=Path)
    sheet.add_argument("--samples", type=int, default=12)
    sheet.add_argument("--max-reject-share", type=float, default=0.1)
    decide = commands.add_parser("decide", help="record a reviewer's decisions")
    decide.add_argument("shard", type=Path)
    decide.add_argument("--reviewer", required=True)
    decide.add_argument("--reject", type=_ids, default=set(), help="image ids, comma separated")
    decide.add_argument("--accept", type=_ids, default=set(), help="image ids, comma separated")
    decide.add_argument("--accept-rest", action="store_true", help="accept every sample not rejected")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print("| shard | kind | frame sets | images | annotations | MB | audit |\n|---|---|---|---|---|---|---|")
            for shard in list_shards(args.root):
                print(f"| {shard.shard_id} | {shard.kind} | {shard.frame_sets} | {shard.images} | "
                      f"{shard.annotations} | {shard.bytes / 1e6:.1f} | {audit_verdict(shard.path)} |")
        elif args.command == "sheet":
            print(create_audit(args.shard, args.samples, args.max_reject_share))
        else:
            audit = record_decisions(args.shard, args.reviewer, args.reject, args.accept_rest, args.accept)
            undecided = sum(s["decision"] is None for s in audit["samples"])
            print(f"{audit['shard_id']}: {audit['verdict']}" + (f" ({undecided} samples undecided)" if undecided else ""))
    except (AuditError, FileNotFoundError, json.JSONDecodeError) as error:
        print(f"workcell_audit: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
