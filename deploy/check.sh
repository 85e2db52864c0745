#!/usr/bin/env bash
# Offline checks of everything under deploy/ that no test exercises by running it:
#   - YAML style (yamllint) of every YAML file;
#   - Prometheus: rules (`promtool check rules`), their unit tests (`promtool test rules`), and the
#     compose stack's config (`promtool check config`);
#   - Kubernetes: `kubectl kustomize deploy/k8s` rendered and validated against the API schemas
#     (kubernetes-validate, strict: unknown fields are errors);
#   - compose, Grafana dashboard and provisioning files parse, and every file compose mounts exists.
# Tools: pinned Python packages in a venv under target/deploy-check; promtool from Debian's
# `prometheus`, kubectl from Debian's `kubernetes-client` when missing. `.ci/run` calls this.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
log() { echo "deploy/check.sh: $*" >&2; }
started=$SECONDS
K8S_VERSION=1.31.0

apt_install() { # PACKAGE...: install, refreshing the package lists once if needed
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

venv=$root/target/deploy-check/venv
if ! "$venv/bin/python" -c 'import yamllint, kubernetes_validate' 2>/dev/null; then
  log "installing yamllint and kubernetes-validate into target/deploy-check"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check yamllint==1.38.0 kubernetes-validate==1.37.0
fi
command -v promtool >/dev/null || { log "installing promtool (Debian package prometheus)"; apt_install prometheus; }

# 1. YAML style.
"$venv/bin/yamllint" --strict -c deploy/.yamllint.yaml deploy/
log "yamllint: ok"

# 2. Prometheus.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
promtool check rules deploy/prometheus/rules.yaml >/dev/null
promtool test rules deploy/prometheus/rules.test.yaml
# The config names the rules where compose mounts them; check it against the file here.
sed "s|/etc/prometheus/rules.yaml|$root/deploy/prometheus/rules.yaml|" deploy/prometheus/prometheus.yml >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null
log "promtool: rules, rule tests and config ok"

# 3. Kubernetes.
if ! command -v kubectl >/dev/null; then
  log "installing kubectl (Debian package kubernetes-client)"
  apt_install kubernetes-client || true
fi
if command -v kubectl >/dev/null; then
  kubectl kustomize deploy/k8s >"$work/k8s.yaml"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$work/k8s.yaml" deploy/k8s/secret.example.yaml
  log "kubernetes: $(grep -c '^kind:' "$work/k8s.yaml") rendered resources valid for Kubernetes $K8S_VERSION"
else
  log "SKIPPED rendering deploy/k8s: kubectl could not be installed; validating base.yaml unrendered"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" deploy/k8s/base.yaml deploy/k8s/secret.example.yaml
fi

# 4. compose and Grafana (no container engine here: parse and cross-check only).
"$venv/bin/python" - <<'PY'
import json, os, sys
import yaml

compose = yaml.safe_load(open("deploy/compose.yaml"))
services = compose["services"]
for name in ["postgres", "migrate", "ingest", "worker", "prometheus", "grafana"]:
    assert name in services, f"compose lacks service {name}"
for name, service in services.items():
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0]
        if source.startswith("."):
            path = os.path.normpath(os.path.join("deploy", source))
            assert os.path.exists(path), f"compose service {name} mounts missing {path}"
        else:
            assert source in compose.get("volumes", {}), f"compose volume {source} is not declared"
dashboard = json.load(open("deploy/grafana/triggers.json"))
ids = [p["id"] for p in dashboard["panels"]]
assert len(ids) == len(set(ids)), "dashboard panel ids repeat"
for path in ["deploy/grafana/provisioning/datasources/prometheus.yaml",
             "deploy/grafana/provisioning/dashboards/triggers.yaml"]:
    assert yaml.safe_load(open(path))["apiVersion"] == 1, path
print(f"deploy/check.sh: compose ({len(services)} services) and Grafana ({len(ids)} panels): ok", file=sys.stderr)
PY
log "all checks passed in $((SECONDS - started)) s"
