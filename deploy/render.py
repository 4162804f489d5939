"""Render a kustomization the way `kustomize build` does, for the subset capsearch uses.

Why: the tests must render the overlays on any machine, with no binary. `deploy/validate.sh`
renders each overlay with both this module and real kustomize (`kubectl kustomize`) and fails
when they differ, so this stays faithful for the manifests in deploy/k8s.

Supported kustomization fields: resources (files and directories), namespace, labels
(includeSelectors: false only), images, patches (strategic merge, from `path` or `patch`,
optional `target`), configMapGenerator / secretGenerator (literals, envs, files; behaviors
create/merge/replace; options.disableNameSuffixHash, labels, annotations), generatorOptions.
Anything else is refused loudly, never ignored.

    python -m deploy.render deploy/k8s/overlays/cpu > cpu.yaml
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "patches",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# strategic-merge keys of the built-in list fields these manifests patch (patchMergeKey)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "volumeClaimTemplates": None,  # replaced as a whole
}
# merge key of `ports` depends on where the list sits
PORT_MERGE_KEY = {"container": "containerPort", "service": "port"}
# marks a generated object until the final build names it
_GENERATED = "__kustomize_lite_generated__"


class RenderError(ValueError):
    """The kustomization uses something this renderer does not implement, or is invalid."""


def render(path: str | Path) -> list[Resource]:
    """The resources `kustomize build path` produces (order not significant)."""
    resources = _build(Path(path))
    return _finalize(resources)


def render_yaml(path: str | Path) -> str:
    return yaml.safe_dump_all(render(path), sort_keys=True, default_flow_style=False)


# --- building one kustomization --------------------------------------------------------------


def _kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise RenderError(f"{directory}: no kustomization file")


def _build(directory: Path) -> list[Resource]:
    kfile = _kustomization_file(directory)
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise RenderError(f"{kfile}: fields not supported by deploy.render: {sorted(unknown)}")

    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        if target.is_dir():
            resources.extend(_build(target))
        elif target.is_file():
            resources.extend(_load_documents(target))
        else:
            raise RenderError(f"{kfile}: resource {entry!r} not found")

    options = spec.get("generatorOptions", {})
    for gen in spec.get("configMapGenerator", []):
        _apply_generator(resources, _generate("ConfigMap", gen, options, directory), gen)
    for gen in spec.get("secretGenerator", []):
        _apply_generator(resources, _generate("Secret", gen, options, directory), gen)

    # kustomize's transformer order: namespace, patches, labels, images
    if "namespace" in spec:
        _set_namespace(resources, spec["namespace"])
    for patch in spec.get("patches", []):
        _apply_patch(resources, patch, directory)
    for label_spec in spec.get("labels", []):
        _apply_labels(resources, label_spec)
    for image in spec.get("images", []):
        _apply_image(resources, image)
    _check_unique(resources, kfile)
    return resources


def _load_documents(path: Path) -> Iterator[Resource]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc:
            raise RenderError(f"{path}: a document is not a Kubernetes object")
        if doc["kind"].endswith("List"):
            raise RenderError(f"{path}: List kinds are not supported")
        yield doc


def _identity(res: Resource) -> tuple[str, str, str]:
    meta = res.get("metadata", {})
    return (res["kind"], meta.get("namespace", ""), meta.get("name", ""))


def _check_unique(resources: list[Resource], where: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for res in resources:
        ident = _identity(res)
        if ident in seen:
            raise RenderError(f"{where}: duplicate resource {ident}")
        seen.add(ident)


# --- generators --------------------------------------------------------------------------------


def _parse_env_file(path: Path) -> Iterator[tuple[str, str]]:
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise RenderError(f"{path}: line {raw!r} is not KEY=VALUE")
        key, value = line.split("=", 1)
        yield key, value


def _generator_data(gen: dict[str, Any], directory: Path) -> dict[str, str]:
    data: dict[str, str] = {}
    for env in gen.get("envs", []):
        data.update(_parse_env_file(directory / env))
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        data[key] = value
    for entry in gen.get("files", []):
        key, _, rel = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (directory / rel).read_text()
    unknown = set(gen) - {"name", "behavior", "envs", "literals", "files", "options", "type"}
    if unknown:
        raise RenderError(f"generator {gen.get('name')}: unsupported fields {sorted(unknown)}")
    return data


def _generate(kind: str, gen: dict[str, Any], options: dict[str, Any], directory: Path) -> Resource:
    data = _generator_data(gen, directory)
    merged = {**options, **gen.get("options", {})}
    res: Resource = {"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]}}
    if kind == "Secret":
        res["type"] = gen.get("type", "Opaque")
        res["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        res["data"] = data
    for field in ("labels", "annotations"):
        if merged.get(field):
            res["metadata"][field] = dict(merged[field])
    res[_GENERATED] = {"hash": not merged.get("disableNameSuffixHash", False)}
    return res


def _apply_generator(resources: list[Resource], generated: Resource, gen: dict[str, Any]) -> None:
    behavior = gen.get("behavior", "create")
    name = generated["metadata"]["name"]
    existing = [
        r for r in resources if r["kind"] == generated["kind"] and r["metadata"]["name"] == name
    ]
    if behavior == "create":
        if existing:
            raise RenderError(f"{generated['kind']} {name} already exists (behavior: create)")
        resources.append(generated)
        return
    if not existing:
        raise RenderError(f"{generated['kind']} {name}: nothing to {behavior}")
    target = existing[0]
    if behavior == "replace":
        target["data"] = generated["data"]
    elif behavior == "merge":
        target.setdefault("data", {}).update(generated["data"])
    else:
        raise RenderError(f"generator behavior {behavior!r} is not supported")


# --- transformers ------------------------------------------------------------------------------


def _set_namespace(resources: list[Resource], namespace: str) -> None:
    for res in resources:
        if res["kind"] not in CLUSTER_SCOPED:
            res.setdefault("metadata", {})["namespace"] = namespace


def _pod_templates(res: Resource) -> Iterator[dict[str, Any]]:
    """The pod template metadata+spec holders of a workload."""
    kind = res["kind"]
    if kind in WORKLOADS:
        yield res.setdefault("spec", {}).setdefault("template", {})
    elif kind == "CronJob":
        yield res["spec"]["jobTemplate"]["spec"].setdefault("template", {})
    elif kind == "Pod":
        yield res


def _containers(res: Resource) -> Iterator[dict[str, Any]]:
    for template in _pod_templates(res):
        spec = template.get("spec", {})
        for field in ("initContainers", "containers"):
            yield from spec.get(field, [])


def _apply_labels(resources: list[Resource], label_spec: dict[str, Any]) -> None:
    unknown = set(label_spec) - {"pairs", "includeSelectors", "includeTemplates"}
    if unknown or label_spec.get("includeSelectors"):
        raise RenderError("labels: only `pairs` and `includeTemplates` are supported")
    pairs = label_spec.get("pairs", {})
    for res in resources:
        res.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if label_spec.get("includeTemplates"):
            templates = [t for t in _pod_templates(res) if t is not res]
            if res["kind"] == "StatefulSet":
                templates += res["spec"].get("volumeClaimTemplates", [])
            for template in templates:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _split_image(image: str) -> tuple[str, str]:
    """`repo/name:tag` -> (`repo/name`, `:tag`); digests and registry ports kept intact."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = image.rsplit(":", 1)
        return name, ":" + tag
    return image, ""


def _apply_image(resources: list[Resource], image: dict[str, Any]) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise RenderError(f"images: unsupported fields {sorted(unknown)}")
    for res in resources:
        for container in _containers(res):
            name, suffix = _split_image(container.get("image", ""))
            if name != image["name"]:
                continue
            new_name = image.get("newName", name)
            if "digest" in image:
                suffix = "@" + image["digest"]
            elif "newTag" in image:
                suffix = ":" + str(image["newTag"])
            container["image"] = new_name + suffix


def _matches(res: Resource, target: dict[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name", "namespace", "group", "version"}
    if unknown:
        raise RenderError(f"patch target: unsupported selectors {sorted(unknown)}")
    meta = res.get("metadata", {})
    group, _, version = res.get("apiVersion", "").rpartition("/")
    checks = {
        "kind": res["kind"],
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "group": group,
        "version": version,
    }
    return all(checks[key] == value for key, value in target.items())


def _apply_patch(resources: list[Resource], patch: dict[str, Any], directory: Path) -> None:
    if set(patch) - {"path", "patch", "target"}:
        raise RenderError(f"patches: unsupported fields {sorted(set(patch))}")
    text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
    body = yaml.safe_load(text)
    if isinstance(body, list):
        raise RenderError("patches: JSON 6902 patches are not supported")
    target = patch.get("target")
    if target is None:
        meta = body.get("metadata", {})
        target = {"kind": body["kind"], "name": meta["name"]}
        if "namespace" in meta:
            target["namespace"] = meta["namespace"]
    hits = [res for res in resources if _matches(res, target)]
    if not hits:
        raise RenderError(f"patch {patch.get('path', '<inline>')}: no resource matches {target}")
    for res in hits:
        body_for_res = copy.deepcopy(body)
        if "target" in patch:
            # a patch aimed by `target` may name another object; the target keeps its identity
            body_for_res.pop("metadata", None)
        merged = strategic_merge(res, body_for_res, builtin=_is_builtin(res))
        res.clear()
        res.update(merged)


def _is_builtin(res: Resource) -> bool:
    group = res.get("apiVersion", "").rpartition("/")[0]
    return group == "" or group.endswith(".k8s.io") or "." not in group


def strategic_merge(base: Any, patch: Any, *, builtin: bool = True, field: str = "") -> Any:
    """Kubernetes strategic merge (built-in kinds) or JSON merge patch (custom resources)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if "$patch" in patch or any(str(k).startswith("$") for k in patch):
            raise RenderError("strategic-merge directives ($patch, ...) are not supported")
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, builtin=builtin, field=key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and builtin:
        key = _merge_key(field, base + patch)
        if key is None:
            return copy.deepcopy(patch)
        # kustomize (kyaml) order: the patch's items first, in patch order (merged into the
        # base's item of the same key), then the base's items the patch does not name
        by_key = {old.get(key): old for old in base}
        named = {item.get(key) for item in patch}
        out = [
            strategic_merge(by_key[item.get(key)], item, builtin=builtin, field=field)
            if item.get(key) in by_key
            else copy.deepcopy(item)
            for item in patch
        ]
        out += [copy.deepcopy(old) for old in base if old.get(key) not in named]
        return out
    return copy.deepcopy(patch)


def _merge_key(field: str, items: list[Any]) -> str | None:
    if not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports":
        kind = "container" if any("containerPort" in i for i in items) else "service"
        return PORT_MERGE_KEY[kind]
    return MERGE_KEYS.get(field)


# --- the final pass: hashed generator names and the references to them -------------------------


def _content_hash(res: Resource) -> str:
    """kustomize's name suffix: sha256 of the object's Go-JSON encoding, 10 chars, re-lettered.

    The encoding is the one kustomize's hasher uses: kind, an empty name, data (and type for
    Secrets), keys sorted, HTML characters escaped as Go's encoding/json does.
    """
    doc: dict[str, Any] = {"kind": res["kind"], "name": "", "data": res.get("data", {})}
    if res["kind"] == "Secret":
        doc["type"] = res.get("type", "Opaque")
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _finalize(resources: list[Resource]) -> list[Resource]:
    renames: dict[tuple[str, str], str] = {}
    for res in resources:
        info = res.pop(_GENERATED, None)
        if info and info["hash"]:
            old = res["metadata"]["name"]
            new = f"{old}-{_content_hash(res)}"
            res["metadata"]["name"] = new
            renames[(res["kind"], old)] = new
    for res in resources:
        for template in _pod_templates(res):
            _rename_references(template.get("spec", {}), renames)
    return resources


def _rename_references(pod_spec: dict[str, Any], renames: dict[tuple[str, str], str]) -> None:
    def rename(holder: dict[str, Any] | None, field: str, kind: str) -> None:
        if holder and (kind, holder.get(field)) in renames:
            holder[field] = renames[(kind, holder[field])]

    containers: Iterable[dict[str, Any]] = [
        *pod_spec.get("initContainers", []),
        *pod_spec.get("containers", []),
    ]
    for container in containers:
        for source in container.get("envFrom", []):
            rename(source.get("configMapRef"), "name", "ConfigMap")
            rename(source.get("secretRef"), "name", "Secret")
        for env in container.get("env", []):
            value_from = env.get("valueFrom", {})
            rename(value_from.get("configMapKeyRef"), "name", "ConfigMap")
            rename(value_from.get("secretKeyRef"), "name", "Secret")
    for volume in pod_spec.get("volumes", []):
        rename(volume.get("configMap"), "name", "ConfigMap")
        rename(volume.get("secret"), "secretName", "Secret")
        for source in volume.get("projected", {}).get("sources", []):
            rename(source.get("configMap"), "name", "ConfigMap")
            rename(source.get("secret"), "name", "Secret")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m deploy.render KUSTOMIZATION_DIR\n")
        return 2
    sys.stdout.write(render_yaml(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
