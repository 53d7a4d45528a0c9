{{/* nats.conf of the in-chart NATS cluster (infra.enabled). */}}
{{- define "jetmart.nats.conf" -}}
{{- $root := . -}}
{{- $n := .Values.infra.nats -}}
{{- $fullName := include "jetmart.componentName" (dict "root" . "component" "nats") -}}
{{- $headless := printf "%s-headless" $fullName -}}
# JetStream cluster of {{ $n.replicas }} servers; server names are the pod names, which is what
# KEDA's nats-jetstream scaler expects (<server>.<headless service>).
server_name: $POD_NAME
listen: 0.0.0.0:4222
http_port: 8222
pid_file: /var/run/nats/nats.pid
# Lame duck mode on SIGTERM (via preStop): clients move to the other servers first.
lame_duck_duration: 30s
lame_duck_grace_period: 10s
jetstream {
  store_dir: /data/jetstream
  max_memory_store: {{ $n.maxMemoryStore }}
  max_file_store: {{ $n.maxFileStore }}
}
{{- if gt (int $n.replicas) 1 }}
cluster {
  name: {{ $fullName }}
  listen: 0.0.0.0:6222
  routes: [
    {{- range $i := until (int $n.replicas) }}
    "nats://{{ $fullName }}-{{ $i }}.{{ $headless }}.{{ $root.Release.Namespace }}.svc.cluster.local:6222"
    {{- end }}
  ]
}
{{- end }}
# Per-service users and permissions (ConfigMap {{ include "jetmart.componentName" (dict "root" . "component" "nats-auth") }}).
include ./auth.conf
{{- end -}}
