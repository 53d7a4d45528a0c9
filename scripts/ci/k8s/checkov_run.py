#!/usr/bin/env python3
"""Run checkov on rendered manifests or a Dockerfile with the documented skips only.

Usage: checkov_run.py --checkov BIN --skips checkov-skips.yaml --framework kubernetes|dockerfile FILE...

Skips come from checkov-skips.yaml (each with a reason; printed once per run). Resource-scoped
`checkov.io/skipN` annotations found in a rendering must be listed under `annotations:` in that
file too, so no skip exists without a reviewed reason. Any failed check or parse error fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml


def annotation_skips(docs: list[dict]) -> list[tuple[str, str]]:
    out = []
    for d in docs:
        for k, v in (d.get("metadata", {}).get("annotations") or {}).items():
            if k.startswith("checkov.io/skip"):
                out.append((f"{d['kind']}/{d['metadata']['name']}", str(v).split("=", 1)[0]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkov", required=True)
    ap.add_argument("--skips", required=True, type=Path)
    ap.add_argument("--framework", required=True, choices=["kubernetes", "dockerfile"])
    ap.add_argument("--print-reasons", action="store_true")
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()

    config = yaml.safe_load(args.skips.read_text())
    entries = config.get(args.framework, [])
    allowed_annotations = {(a["resource"], a["id"]) for a in config.get("annotations", [])}
    for e in entries + config.get("annotations", []):
        if not str(e.get("reason", "")).strip():
            print(f"    ERROR {args.skips}: skip {e.get('id')} has no reason")
            return 1

    if args.print_reasons:
        for e in entries:
            scope = "" if e["when"] == "always" else f" [only when: {e['when']}]"
            print(f"    skip {e['id']}{scope}: " + textwrap.shorten(" ".join(e["reason"].split()), 150))
        if args.framework == "kubernetes":
            for a in config.get("annotations", []):
                print(f"    skip {a['id']} on {a['resource']} (annotation): " + textwrap.shorten(" ".join(a["reason"].split()), 120))

    failed = False
    for path in args.files:
        skip_ids = [e["id"] for e in entries if e["when"] == "always"]
        errors: list[str] = []
        if args.framework == "kubernetes":
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
            if not any(d["kind"] == "NetworkPolicy" for d in docs):
                skip_ids += [e["id"] for e in entries if e["when"] == "no-networkpolicies"]
            for resource, check_id in annotation_skips(docs):
                if (resource, check_id) not in allowed_annotations:
                    errors.append(f"{resource}: annotation skip {check_id} is not documented in {args.skips.name}")
        cmd = [args.checkov, "-f", str(path), "--framework", args.framework, "--skip-download",
               "--output", "json", "--compact"]
        if skip_ids:
            cmd += ["--skip-check", ",".join(skip_ids)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            print(f"    ERROR checkov produced no JSON for {path}: {proc.stderr.strip()[-500:]}")
            failed = True
            continue
        reports = report if isinstance(report, list) else [report]
        passed = failed_n = skipped = parse_errors = 0
        skipped_ids: set[str] = set()
        for r in reports:
            if "results" not in r:  # an empty result ("no resources found")
                errors.append(f"checkov found nothing to check in {path} ({r})")
                continue
            s = r["summary"]
            passed += s["passed"]
            failed_n += s["failed"]
            skipped += s["skipped"]
            parse_errors += s.get("parsing_errors", 0)
            skipped_ids |= {c["check_id"] for c in r["results"].get("skipped_checks", [])}
            for c in r["results"].get("failed_checks", []):
                errors.append(f"{c['check_id']} {c['check_name']!r} on {c.get('resource')}")
        if parse_errors:
            errors.append(f"{parse_errors} parsing error(s)")
        print(f"  {path.name}: {passed} passed, {failed_n} failed, {skipped} skipped by annotation"
              + (f" ({', '.join(sorted(skipped_ids))})" if skipped_ids else "")
              + (f"; not run (skip list): {', '.join(skip_ids)}" if skip_ids else ""))
        for e in errors:
            print(f"    ERROR {e}")
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
