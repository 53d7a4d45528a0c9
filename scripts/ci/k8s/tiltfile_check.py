#!/usr/bin/env python3
"""Evaluate the Tiltfile with starlark-pyo3 against recording stubs of Tilt's builtins, then
assert what it declares. No Tilt, Docker or cluster needed.

Usage: tiltfile_check.py --tiltfile Tiltfile --helm .tools/bin/helm

The stubs accept exactly the parameters of Tilt's real API (api.py of tilt.build), so a typo in a
keyword fails here. helm() really runs `helm template` with the given arguments, and k8s_yaml()
parses what it is given, so the assertions see the objects Tilt would deploy:
  * the image built by docker_build is the one the chart's workloads use, from a Dockerfile that exists;
  * every workload of the rendering is configured by a k8s_resource, and every k8s_resource
    names a workload that exists;
  * every jetmart service has a gRPC port-forward to container port 50051 on a distinct local port,
    analytics' dashboard (8080) is forwarded, every forwarded container port is a real container port;
  * resources are grouped by labels, resource_deps name existing resources;
  * the load generator and the chaos run are buttons (manual trigger, not run on `tilt up`).
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

import starlark as sl
import yaml

# Parameters of the Tilt builtins the Tiltfile may use (tilt.build api/api.py).
SIGNATURES = {
    "docker_build": ["ref", "context", "build_args", "dockerfile", "dockerfile_contents", "live_update",
                     "match_in_env_vars", "ignore", "only", "entrypoint", "target", "ssh", "network", "secret",
                     "extra_tag", "container_args", "cache_from", "pull", "platform"],
    "k8s_yaml": ["yaml", "allow_duplicates"],
    "helm": ["pathToChartDir", "name", "namespace", "values", "set", "kube_version", "skip_crds"],
    "k8s_resource": ["workload", "new_name", "port_forwards", "extra_pod_selectors", "trigger_mode", "resource_deps",
                     "objects", "auto_init", "pod_readiness", "links", "labels", "discovery_strategy"],
    "port_forward": ["local_port", "container_port", "name", "link_path", "host"],
    "local_resource": ["name", "cmd", "deps", "trigger_mode", "resource_deps", "ignore", "auto_init", "serve_cmd",
                       "cmd_bat", "serve_cmd_bat", "allow_parallel", "links", "tags", "env", "serve_env",
                       "readiness_probe", "dir", "serve_dir", "labels"],
    "allow_k8s_contexts": ["contexts"],
    "update_settings": ["max_parallel_updates", "k8s_upsert_timeout_secs", "suppress_unused_image_warnings"],
    "link": ["url", "name"],
}
REQUIRED = {"docker_build": 2, "k8s_yaml": 1, "helm": 1, "port_forward": 1, "local_resource": 1, "allow_k8s_contexts": 1, "link": 1}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}


class Recorder:
    def __init__(self, root: Path, helm: str):
        self.root = root
        self.helm = helm
        self.calls: dict[str, list[dict]] = {k: [] for k in SIGNATURES}
        self.objects: list[dict] = []

    def stub(self, name: str):
        params = SIGNATURES[name]

        def fn(*args, **kwargs):
            if len(args) > len(params):
                raise TypeError(f"{name}() takes at most {len(params)} positional arguments")
            bound = dict(zip(params, args))
            for k, v in kwargs.items():
                if k not in params:
                    raise TypeError(f"{name}() got an unexpected keyword argument {k!r} (not in Tilt's API)")
                if k in bound:
                    raise TypeError(f"{name}() got multiple values for {k!r}")
                bound[k] = v
            missing = params[:REQUIRED.get(name, 0)]
            for p in missing:
                if p not in bound:
                    raise TypeError(f"{name}() missing required argument {p!r}")
            self.calls[name].append(bound)
            hook = getattr(self, "on_" + name, None)
            return hook(bound) if hook else None

        fn.__name__ = name
        fn.__signature__ = inspect.Signature()
        return fn

    def on_helm(self, a: dict):
        chart = self.root / a["pathToChartDir"]
        if not (chart / "Chart.yaml").is_file():
            raise ValueError(f"helm(): no chart at {chart}")
        cmd = [self.helm, "template", a.get("name") or "chart", str(chart)]
        if a.get("namespace"):
            cmd += ["--namespace", a["namespace"]]
        values = a.get("values") or []
        for v in [values] if isinstance(values, str) else values:
            if not (self.root / v).is_file():
                raise ValueError(f"helm(): values file {v} does not exist")
            cmd += ["-f", str(self.root / v)]
        sets = a.get("set") or []
        for s in [sets] if isinstance(sets, str) else sets:
            cmd += ["--set", s]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        # Like Tilt, drop the helm test hooks (templates/tests/).
        docs = [d for d in out.split("\n---\n") if "# Source: " not in d or "/tests/" not in d.split("# Source: ", 1)[1].split("\n", 1)[0]]
        return {"__blob__": "\n---\n".join(docs)}

    def on_k8s_yaml(self, a: dict):
        y = a["yaml"]
        items = y if isinstance(y, list) else [y]
        for item in items:
            if isinstance(item, dict) and "__blob__" in item:
                text = item["__blob__"]
            elif isinstance(item, str):
                path = self.root / item
                if not path.is_file():
                    raise ValueError(f"k8s_yaml(): {item} does not exist")
                text = path.read_text()
            else:
                raise TypeError(f"k8s_yaml(): unsupported argument {item!r}")
            self.objects += [d for d in yaml.safe_load_all(text) if d]

    def on_port_forward(self, a: dict):
        return {"__port_forward__": a}

    def on_link(self, a: dict):
        return {"__link__": a}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiltfile", required=True, type=Path)
    ap.add_argument("--helm", required=True)
    args = ap.parse_args()
    root = args.tiltfile.resolve().parent
    rec = Recorder(root, args.helm)

    module = sl.Module()
    for name in SIGNATURES:
        module.add_callable(name, rec.stub(name))
    module["TRIGGER_MODE_AUTO"] = "TRIGGER_MODE_AUTO"
    module["TRIGGER_MODE_MANUAL"] = "TRIGGER_MODE_MANUAL"
    dialect = sl.Dialect.extended()
    ast = sl.parse(str(args.tiltfile), args.tiltfile.read_text(), dialect)
    sl.eval(module, ast, sl.Globals.standard())

    errors: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            errors.append(what)

    chart_values = yaml.safe_load((root / "deploy/helm/jetmart/values.yaml").read_text())
    services = sorted(chart_values["services"])

    # Image.
    builds = rec.calls["docker_build"]
    check(len(builds) == 1, f"expected one docker_build, got {len(builds)}")
    refs = {b["ref"] for b in builds}
    for b in builds:
        check((root / b["context"]).is_dir(), f"docker_build context {b['context']} missing")
        check((root / b["context"] / b.get("dockerfile", "Dockerfile")).is_file(), "docker_build Dockerfile missing")
    workloads = {o["metadata"]["name"]: o for o in rec.objects if o["kind"] in WORKLOAD_KINDS}
    check(bool(rec.calls["helm"]), "helm() not called")
    check(bool(workloads), "no workloads were passed to k8s_yaml")

    def containers(o: dict) -> list[dict]:
        spec = o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"]
        return spec.get("containers", []) + spec.get("initContainers", [])

    built_image_users = set()
    for name, o in workloads.items():
        for c in containers(o):
            repo = c["image"].split("@")[0].rsplit(":", 1)[0] if ":" in c["image"].rsplit("/", 1)[-1] else c["image"].split("@")[0]
            if repo in refs:
                built_image_users.add(name)
    for svc in services:
        check(f"jetmart-{svc}" in built_image_users, f"workload jetmart-{svc} does not use the image built by docker_build ({refs})")

    # Resources.
    resources = {}
    for r in rec.calls["k8s_resource"]:
        wl = r.get("workload", "")
        check(wl in workloads, f"k8s_resource({wl!r}): no such workload in the rendered YAML")
        resources[r.get("new_name") or wl] = r
    for wl in workloads:
        check(any(r.get("workload") == wl for r in rec.calls["k8s_resource"]), f"workload {wl} has no k8s_resource (unlabelled, no port-forward)")
    local_ports: dict[int, str] = {}
    for rname, r in resources.items():
        check(bool(r.get("labels")), f"resource {rname} has no labels (UI grouping)")
        pfs = r.get("port_forwards") or []
        pfs = pfs if isinstance(pfs, list) else [pfs]
        wl = workloads.get(r.get("workload"))
        cports = {p["containerPort"] for c in (containers(wl) if wl else []) for p in c.get("ports", [])}
        for pf in pfs:
            check(isinstance(pf, dict) and "__port_forward__" in pf, f"{rname}: port_forwards must use port_forward() ({pf!r})")
            if not isinstance(pf, dict) or "__port_forward__" not in pf:
                continue
            p = pf["__port_forward__"]
            lp, cp = p["local_port"], p.get("container_port") or p["local_port"]
            check(lp not in local_ports, f"local port {lp} forwarded twice ({local_ports.get(lp)}, {rname})")
            local_ports[lp] = rname
            check(cp in cports, f"{rname}: forwards to container port {cp}, which the workload does not expose ({sorted(cports)})")
    for svc in services:
        r = next((r for r in rec.calls["k8s_resource"] if r.get("workload") == f"jetmart-{svc}"), None)
        if r is None:
            errors.append(f"service {svc} has no k8s_resource")
            continue
        pfs = [pf["__port_forward__"] for pf in (r.get("port_forwards") or []) if isinstance(pf, dict) and "__port_forward__" in pf]
        check(any(p.get("container_port") == 50051 for p in pfs), f"service {svc} has no gRPC port-forward (container port 50051)")
    analytics = next((r for r in rec.calls["k8s_resource"] if r.get("workload") == "jetmart-analytics"), {})
    check(any(pf["__port_forward__"].get("container_port") == 8080 for pf in analytics.get("port_forwards") or [] if isinstance(pf, dict)),
          "analytics dashboard (container port 8080) is not forwarded")

    locals_ = {r["name"]: r for r in rec.calls["local_resource"]}
    names = set(resources) | set(locals_)
    for rname, r in list(resources.items()) + list(locals_.items()):
        for dep in r.get("resource_deps") or []:
            check(dep in names, f"{rname}: resource_dep {dep!r} is not a resource")
    for button, binary in (("loadgen", "jetmart-loadgen"), ("chaos", "jetmart-kchaos")):
        r = locals_.get(button)
        if r is None:
            errors.append(f"local_resource {button!r} missing")
            continue
        check(binary in str(r.get("cmd")), f"{button} does not run {binary}")
        check(r.get("trigger_mode") == "TRIGGER_MODE_MANUAL", f"{button} is not a manual trigger")
        check(r.get("auto_init") is False, f"{button} would run on `tilt up` (auto_init must be False)")
        check(bool(r.get("labels")), f"{button} has no labels")

    # Namespace: the one helm renders into exists with the restricted Pod Security Standard.
    ns = {o["metadata"]["name"]: o for o in rec.objects if o["kind"] == "Namespace"}
    helm_ns = rec.calls["helm"][0].get("namespace") if rec.calls["helm"] else None
    check(helm_ns in ns, f"namespace {helm_ns!r} used by helm() is not applied")
    if helm_ns in ns:
        check(ns[helm_ns]["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
              "namespace does not enforce the restricted Pod Security Standard")

    n_pf = len(local_ports)
    print(f"  Tiltfile: {len(builds)} image build, {len(rec.objects)} objects from k8s_yaml, {len(resources)} k8s resources "
          f"({n_pf} port-forwards), {len(locals_)} local resources ({', '.join(sorted(locals_))})")
    for e in errors:
        print(f"    ERROR {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
