#!/usr/bin/env python3
"""Structural checks kubeconform-style schema validation does not make, over deploy/k8s:
every kustomization's files exist; every workload runs as non-root with a read-only root
filesystem, no privilege escalation, all capabilities dropped and resource requests and
limits; the server has startup, liveness and readiness probes on /healthz and /readyz;
Services, PDBs and HPAs point at workloads that exist; the Ingress has TLS; a NetworkPolicy
covers the pods; no Secret with data is committed. Exits 1 with the problems listed.
Run by the test suite (tests/it/ops.rs) after `kubernetes-validate --strict`."""
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
problems = []


def load(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


docs = []
patch_files = set()
for kfile in sorted(ROOT.rglob("kustomization.yaml")):
    k = yaml.safe_load(kfile.read_text())
    for key in ("resources", "patches"):
        for entry in k.get(key, []):
            ref = entry["path"] if isinstance(entry, dict) else entry
            target = (kfile.parent / ref).resolve()
            if not target.exists():
                problems.append(f"{kfile.relative_to(ROOT)}: {key} entry {ref} does not exist")
            elif key == "patches":
                patch_files.add(target)
                if not target.name.startswith("patch-"):
                    problems.append(f"{kfile.relative_to(ROOT)}: patch {ref} is not named "
                                    "patch-*.yaml (the schema check skips those by name)")
for f in sorted(ROOT.rglob("*.yaml")):
    # Patches are partial objects, checked by the schema validator only.
    if f.name == "kustomization.yaml" or f.resolve() in patch_files:
        continue
    for d in load(f):
        docs.append((f.relative_to(ROOT), d))

by_kind = {}
for f, d in docs:
    by_kind.setdefault(d["kind"], []).append((f, d))

workloads = {d["metadata"]["name"]: (f, d) for f, d in by_kind.get("Deployment", [])
             if "template" in d.get("spec", {})}
for name, (f, d) in workloads.items():
    pod = d["spec"]["template"]["spec"]
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        problems.append(f"{f}: {name} does not set runAsNonRoot")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{f}: {name} mounts a service account token")
    for c in pod.get("initContainers", []) + pod["containers"]:
        csc = c.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{f}: {name}/{c['name']} root filesystem is writable")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{f}: {name}/{c['name']} allows privilege escalation")
        if csc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{f}: {name}/{c['name']} keeps capabilities")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(part, {})):
                problems.append(f"{f}: {name}/{c['name']} lacks {part} for cpu and memory")
    labels = d["spec"]["template"]["metadata"]["labels"]
    if labels.get("app.kubernetes.io/component") == "server":
        c = pod["containers"][0]
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                problems.append(f"{f}: {name} {probe} is not an HTTP probe of {path}")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


pod_labels = [d["spec"]["template"]["metadata"]["labels"] for _, d in workloads.values()]
for f, d in by_kind.get("Service", []):
    if not any(selects(d["spec"]["selector"], l) for l in pod_labels):
        problems.append(f"{f}: Service {d['metadata']['name']} selects no pod")
for f, d in by_kind.get("PodDisruptionBudget", []):
    sel = d["spec"].get("selector", {}).get("matchLabels")
    if sel is not None and not any(selects(sel, l) for l in pod_labels):
        problems.append(f"{f}: PDB {d['metadata']['name']} selects no pod")
for f, d in by_kind.get("HorizontalPodAutoscaler", []):
    t = d["spec"]["scaleTargetRef"]["name"]
    if t not in workloads:
        problems.append(f"{f}: HPA targets {t}, which is not defined")
for f, d in by_kind.get("Ingress", []):
    if not d["spec"].get("tls"):
        problems.append(f"{f}: Ingress {d['metadata']['name']} has no TLS")
policies = by_kind.get("NetworkPolicy", [])
for labels in pod_labels:
    if not any(selects(p["spec"]["podSelector"].get("matchLabels", {}), labels) for _, p in policies):
        problems.append(f"no NetworkPolicy covers pods labelled {labels}")
for f, d in by_kind.get("Secret", []):
    if d.get("data") or d.get("stringData"):
        problems.append(f"{f}: a Secret with data is committed")
for kind in ("Deployment", "Service", "Ingress", "ConfigMap", "PodDisruptionBudget",
             "NetworkPolicy", "HorizontalPodAutoscaler", "PersistentVolumeClaim"):
    if kind not in by_kind:
        problems.append(f"no {kind} in deploy/k8s")

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"{len(docs)} manifests: ok")
