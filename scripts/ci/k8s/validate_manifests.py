#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests without an API server.

Usage: validate_manifests.py --k8s-version 1.30.0 --k8s-version 1.35.0 --crd-schemas DIR
       [--extra SCHEMA.json:FILE.yaml]... FILE...

1. Schemas. Every object of a built-in kind is validated with kubernetes-validate in strict mode
   (unknown fields are errors) for each --k8s-version. Objects of the custom resources the chart
   renders (KEDA ScaledObject, prometheus-operator ServiceMonitor/PrometheusRule) are not in the
   Kubernetes schemas: they are validated against the minimal schemas in DIR, and any other kind
   without a schema is an error, never silently skipped.
2. Invariants an API server would only reveal at runtime (or never):
   - restricted Pod Security Standard on every pod template (non-root, no privilege escalation,
     capabilities drop ALL, RuntimeDefault seccomp, read-only root filesystem, no host namespaces);
   - jetmart service pods: terminationGracePeriodSeconds > preStop sleep + SHUTDOWN_DEADLINE_SECS
     of their ConfigMap, ports grpc/50051 and http/8080, command = their own binary, a `migrate`
     init container exactly when they get DATABASE_URL;
   - every ConfigMap referenced by a pod is rendered; with generated (dev) secrets, every
     secretKeyRef resolves to a rendered Secret *and key*;
   - HPA / ScaledObject targets exist, and an autoscaled Deployment leaves spec.replicas unset;
   - every Service selects some pod template; no duplicate objects;
   - when NetworkPolicies are rendered, every pod template is selected by one.
Prints one line per file and version; exit status 1 on any error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] == "Pod":
        return obj.get("spec", {})
    if obj["kind"] in WORKLOADS:
        return obj.get("spec", {}).get("template", {}).get("spec", {})
    return None


def pod_labels(obj: dict) -> dict:
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    return obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})


def matches(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        val = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and val not in e.get("values", []):
            return False
        if op == "NotIn" and val in e.get("values", []):
            return False
        if op == "Exists" and e["key"] not in labels:
            return False
        if op == "DoesNotExist" and e["key"] in labels:
            return False
    return True


def ident(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def check_invariants(objs: list[dict]) -> list[str]:
    errs: list[str] = []
    by_kind: dict[str, dict[str, dict]] = {}
    seen = set()
    for o in objs:
        key = (o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        if key in seen:
            errs.append(f"duplicate object {ident(o)}")
        seen.add(key)
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    dev_secrets = any(s["metadata"].get("labels", {}).get("jetmart.io/dev-only") == "true" for s in secrets.values())
    netpols = list(by_kind.get("NetworkPolicy", {}).values())

    for o in objs:
        spec = pod_spec(o)
        if spec is None:
            continue
        name = ident(o)
        psc = spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                errs.append(f"{name}: {flag}")
        for v in spec.get("volumes", []):
            if "hostPath" in v:
                errs.append(f"{name}: hostPath volume {v['name']}")
        containers = spec.get("containers", []) + spec.get("initContainers", [])
        for c in containers:
            sc = c.get("securityContext", {})
            cname = f"{name} container {c['name']}"
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                errs.append(f"{cname}: runAsNonRoot not set")
            if sc.get("runAsUser", psc.get("runAsUser", 1)) == 0:
                errs.append(f"{cname}: runs as uid 0")
            if sc.get("allowPrivilegeEscalation") is not False:
                errs.append(f"{cname}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                errs.append(f"{cname}: privileged")
            if "ALL" not in (sc.get("capabilities", {}).get("drop") or []):
                errs.append(f"{cname}: capabilities.drop must contain ALL")
            if (sc.get("capabilities", {}).get("add") or []) not in ([], ["NET_BIND_SERVICE"]):
                errs.append(f"{cname}: adds capabilities")
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                errs.append(f"{cname}: seccompProfile must be RuntimeDefault")
            if sc.get("readOnlyRootFilesystem") is not True:
                errs.append(f"{cname}: readOnlyRootFilesystem must be true")
            if c.get("image", "").endswith(":latest") or ":" not in c.get("image", "").rsplit("/", 1)[-1] and "@" not in c.get("image", ""):
                errs.append(f"{cname}: image {c.get('image')!r} has no pinned tag or digest")
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef", {}).get("name")
                if ref and ref not in configmaps:
                    errs.append(f"{cname}: envFrom ConfigMap {ref} is not rendered")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and dev_secrets and not ref.get("optional"):
                    s = secrets.get(ref["name"])
                    if s is None:
                        errs.append(f"{cname}: env {e['name']} reads Secret {ref['name']}, which is not rendered")
                    elif ref["key"] not in {**s.get("data", {}), **s.get("stringData", {})}:
                        errs.append(f"{cname}: env {e['name']} reads key {ref['key']} missing from Secret {ref['name']}")
        for v in spec.get("volumes", []):
            sources = [v] + [s for s in v.get("projected", {}).get("sources", [])]
            for s in sources:
                ref = s.get("configMap", {}).get("name")
                if ref and ref not in configmaps:
                    errs.append(f"{name}: volume {v['name']} uses ConfigMap {ref}, which is not rendered")

        labels = pod_labels(o)
        if netpols and not any(matches(p["spec"]["podSelector"], labels) for p in netpols):
            errs.append(f"{name}: no NetworkPolicy selects its pods")

        # jetmart service pods.
        if labels.get("jetmart.io/service") == "true":
            comp = labels["app.kubernetes.io/component"]
            main = next(c for c in spec["containers"] if c["name"] == comp)
            cm = next((configmaps.get(ef["configMapRef"]["name"]) for ef in main.get("envFrom", []) if "configMapRef" in ef), None)
            if cm is None:
                errs.append(f"{name}: no ConfigMap env")
                continue
            deadline = int(cm["data"]["SHUTDOWN_DEADLINE_SECS"])
            sleep = main.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace <= deadline + sleep:
                errs.append(f"{name}: terminationGracePeriodSeconds {grace} <= preStop {sleep} + SHUTDOWN_DEADLINE_SECS {deadline}")
            ports = {(p["name"], p["containerPort"]) for p in main.get("ports", [])}
            if ports != {("grpc", 50051), ("http", 8080)}:
                errs.append(f"{name}: ports {sorted(ports)} (want grpc/50051, http/8080)")
            if main.get("command", [None])[0] != f"/usr/local/bin/jetmart-{comp}":
                errs.append(f"{name}: command {main.get('command')} does not run jetmart-{comp}")
            has_db = any(e["name"] == "DATABASE_URL" for e in main.get("env", []))
            inits = [c for c in spec.get("initContainers", []) if c.get("command", [])[-1:] == ["migrate"]]
            if has_db != bool(inits):
                errs.append(f"{name}: DATABASE_URL={has_db} but migrate init containers={len(inits)}")

    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for o in by_kind.get(kind, {}).values():
            ref = o["spec"]["scaleTargetRef"]
            target = by_kind.get(ref.get("kind", "Deployment"), {}).get(ref["name"])
            if target is None:
                errs.append(f"{ident(o)}: target {ref['name']} is not rendered")
            elif "replicas" in target["spec"]:
                errs.append(f"{ident(o)}: target {ident(target)} sets spec.replicas (the autoscaler owns it)")
    hpa_targets = {o["spec"]["scaleTargetRef"]["name"] for o in by_kind.get("HorizontalPodAutoscaler", {}).values()}
    keda_targets = {o["spec"]["scaleTargetRef"]["name"] for o in by_kind.get("ScaledObject", {}).values()}
    for both in sorted(hpa_targets & keda_targets):
        errs.append(f"Deployment/{both}: has both an HPA and a ScaledObject")

    pods = [pod_labels(o) for o in objs if pod_spec(o) is not None]
    for svc in by_kind.get("Service", {}).values():
        sel = svc["spec"].get("selector")
        if sel and not any(matches({"matchLabels": sel}, labels) for labels in pods):
            errs.append(f"{ident(svc)}: selector {sel} matches no pod template")
    return errs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-version", action="append", required=True)
    ap.add_argument("--crd-schemas", required=True, type=Path)
    ap.add_argument("--extra", action="append", default=[], metavar="SCHEMA.json:FILE.yaml",
                    help="also validate a non-Kubernetes YAML file (e.g. the kind cluster config) against a JSON schema")
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args()

    validators = {}
    for key, fname in CRD_SCHEMAS.items():
        schema = json.loads((args.crd_schemas / fname).read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        validators[key] = jsonschema.Draft7Validator(schema)

    failed = False
    for pair in args.extra:
        schema_path, file_path = pair.split(":", 1)
        schema = json.loads(Path(schema_path).read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        errs = [f"{'/'.join(map(str, e.path))}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(Path(file_path).read_text()))]
        print(f"  {Path(file_path).name}: against {Path(schema_path).name}: {'ok' if not errs else f'{len(errs)} error(s)'}")
        for e in errs:
            print(f"    ERROR {e}")
        failed |= bool(errs)
    for path in args.files:
        objs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        errs: list[str] = []
        counts = {"core": 0, "crd": 0}
        for o in objs:
            key = (o.get("apiVersion"), o.get("kind"))
            if key in validators:
                counts["crd"] += 1
                for e in sorted(validators[key].iter_errors(o), key=lambda e: list(e.path)):
                    errs.append(f"{ident(o)}: {'/'.join(map(str, e.path))}: {e.message}")
                continue
            counts["core"] += 1
            for version in args.k8s_version:
                try:
                    kubernetes_validate.validate(o, version, strict=True)
                except kubernetes_validate.SchemaNotFoundError:
                    errs.append(f"{ident(o)}: no schema for {key[0]} {key[1]} in Kubernetes {version} "
                                "(not a built-in kind and no minimal CRD schema: add one, never skip silently)")
                except kubernetes_validate.ValidationError as e:
                    errs.append(f"{ident(o)} [k8s {version}]: {'/'.join(map(str, e.path))}: {e.message}")
        if not objs:
            errs.append("no objects rendered")
        errs += check_invariants(objs)
        status = "ok" if not errs else f"{len(errs)} error(s)"
        print(f"  {path.name}: {counts['core']} objects x Kubernetes {', '.join(args.k8s_version)} (strict), "
              f"{counts['crd']} custom resources x minimal CRD schemas, invariants: {status}")
        for e in errs:
            print(f"    ERROR {e}")
        failed |= bool(errs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
