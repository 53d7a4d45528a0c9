{{/*
Naming and labels.
*/}}
{{- define "jetmart.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "jetmart.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "jetmart.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of one component: jetmart.componentName (dict "root" $ "component" "order") */}}
{{- define "jetmart.componentName" -}}
{{- printf "%s-%s" (include "jetmart.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "jetmart.labels" -}}
helm.sh/chart: {{ include "jetmart.chart" . }}
app.kubernetes.io/name: {{ include "jetmart.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jetmart
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "order") */}}
{{- define "jetmart.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jetmart.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full labels of one component: (dict "root" $ "component" "order") */}}
{{- define "jetmart.componentLabels" -}}
{{ include "jetmart.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The jetmart image reference. */}}
{{- define "jetmart.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) -}}
{{- end -}}
{{- end -}}

{{/* An infra image: (dict "image" .Values.infra.nats.image) */}}
{{- define "jetmart.infraImage" -}}
{{- printf "%s:%s" .image.repository (toString .image.tag) -}}
{{- end -}}

{{/*
Deep merge that lets the source win for every key, including false, 0 and "" (sprig's
merge/mergeOverwrite treat those as "empty" and would keep the default). Mutates .dst.
*/}}
{{- define "jetmart.deepMerge" -}}
{{- $dst := .dst -}}
{{- range $k, $v := .src -}}
{{- if and (kindIs "map" $v) (hasKey $dst $k) (kindIs "map" (get $dst $k)) -}}
{{- include "jetmart.deepMerge" (dict "dst" (get $dst $k) "src" $v) -}}
{{- else -}}
{{- $_ := set $dst $k (deepCopy $v) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Effective settings of one service: serviceDefaults deep-merged with services.<name>, plus "name".
Usage: {{- $svc := dict -}}{{- include "jetmart.service.values" (dict "root" $ "name" "order" "out" $svc) -}}
*/}}
{{- define "jetmart.service.values" -}}
{{- $out := .out -}}
{{- include "jetmart.deepMerge" (dict "dst" $out "src" (deepCopy .root.Values.serviceDefaults)) -}}
{{- include "jetmart.deepMerge" (dict "dst" $out "src" (get .root.Values.services .name)) -}}
{{- $_ := set $out "name" .name -}}
{{- end -}}

{{/* Comma-separated names of the enabled services, in a stable (sorted) order. */}}
{{- define "jetmart.enabledServices" -}}
{{- $names := list -}}
{{- range $name := keys .Values.services | sortAlpha -}}
{{- $svc := dict -}}
{{- include "jetmart.service.values" (dict "root" $ "name" $name "out" $svc) -}}
{{- if $svc.enabled -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* Secret holding one service's credentials: (dict "root" $ "svc" $svc) */}}
{{- define "jetmart.service.secretName" -}}
{{- if .root.Values.infra.enabled -}}
{{- printf "%s-dev-credentials" (include "jetmart.componentName" (dict "root" .root "component" .svc.name)) -}}
{{- else -}}
{{- default (printf "%s-credentials" (include "jetmart.componentName" (dict "root" .root "component" .svc.name))) .svc.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* terminationGracePeriodSeconds derived from SHUTDOWN_DEADLINE_SECS, so the two cannot drift. */}}
{{- define "jetmart.terminationGracePeriodSeconds" -}}
{{- $r := .Values.runtime -}}
{{- add (int $r.preStopSleepSecs) (int $r.shutdownDeadlineSecs) (int $r.terminationGraceMarginSecs) -}}
{{- end -}}

{{/* NATS_URL seen by the services. */}}
{{- define "jetmart.natsUrl" -}}
{{- if .Values.infra.enabled -}}
{{- printf "nats://%s:4222" (include "jetmart.componentName" (dict "root" . "component" "nats")) -}}
{{- else -}}
{{- .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* host:port of the NATS monitoring endpoint (KEDA). */}}
{{- define "jetmart.natsMonitoringEndpoint" -}}
{{- if .Values.nats.monitoringEndpoint -}}
{{- .Values.nats.monitoringEndpoint -}}
{{- else if .Values.infra.enabled -}}
{{- printf "%s-headless.%s.svc.cluster.local:8222" (include "jetmart.componentName" (dict "root" . "component" "nats")) .Release.Namespace -}}
{{- else -}}
{{- fail "nats.monitoringEndpoint is required with keda.enabled=true and infra.enabled=false" -}}
{{- end -}}
{{- end -}}

{{/*
Dev-only password, stable across renders: (dict "root" $ "owner" "order" "purpose" "nats").
Only used with infra.enabled (values-kind.yaml); never for a real deployment.
*/}}
{{- define "jetmart.devPassword" -}}
{{- printf "%s/%s/%s" .root.Values.infra.devSecretSeed .owner .purpose | sha256sum | trunc 32 -}}
{{- end -}}

{{/* Name of the environment variable carrying a NATS user's password in the nats-server process. */}}
{{- define "jetmart.natsPasswordEnv" -}}
{{- printf "%s%s" .root.Values.natsAuth.passwordEnvPrefix (upper .user | replace "-" "_") -}}
{{- end -}}

{{/*
NATS permissions of one service, derived from its row of the event-flow matrix
(services.<name>.events + streams). The ONLY place that turns the matrix into subjects.
Input: (dict "root" $ "name" "payment"). Output: YAML {publish: [...], subscribe: [...]}.
  publish:   its own context's subjects (the stream it publishes), deadletter.<name>.>,
             $JS.API.INFO, STREAM.INFO/CREATE/UPDATE of every stream it touches (own, consumed,
             DEADLETTER), and for each consumed stream only its own durable consumer named <name>:
             CONSUMER.CREATE (with and without filter-subject suffix), DURABLE.CREATE (pre-2.9
             API), CONSUMER.INFO, CONSUMER.MSG.NEXT, and the acks $JS.ACK.<STREAM>.<name>.>.
  subscribe: _INBOX.> (JetStream API replies, pull batches and publish acks all arrive there).
*/}}
{{- define "jetmart.natsPermissions" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $events := (get $root.Values.services $name).events -}}
{{- $pub := list -}}
{{- $touched := list -}}
{{- if $events.publishes -}}
{{- $stream := get $root.Values.streams $events.publishes -}}
{{- if not $stream -}}
{{- fail (printf "services.%s.events.publishes: stream %q is not in .Values.streams" $name $events.publishes) -}}
{{- end -}}
{{- $pub = concat $pub $stream.subjects -}}
{{- $touched = append $touched $events.publishes -}}
{{- end -}}
{{- $pub = append $pub (printf "deadletter.%s.>" $name) -}}
{{- $pub = append $pub "$JS.API.INFO" -}}
{{- $consumed := keys ($events.consumes | default dict) | sortAlpha -}}
{{- range $s := $consumed -}}
{{- if not (hasKey $root.Values.streams $s) -}}
{{- fail (printf "services.%s.events.consumes: stream %q is not in .Values.streams" $name $s) -}}
{{- end -}}
{{- end -}}
{{- $touched = concat $touched $consumed -}}
{{- $touched = append $touched "DEADLETTER" | uniq -}}
{{- range $s := $touched -}}
{{- $pub = append $pub (printf "$JS.API.STREAM.INFO.%s" $s) -}}
{{- $pub = append $pub (printf "$JS.API.STREAM.CREATE.%s" $s) -}}
{{- $pub = append $pub (printf "$JS.API.STREAM.UPDATE.%s" $s) -}}
{{- end -}}
{{- $durables := dict -}}
{{- range $s := $consumed -}}
{{- $_ := set $durables $s (list $name) -}}
{{- end -}}
{{- range $s, $extra := ($events.extraDurables | default dict) -}}
{{- if not (hasKey $root.Values.streams $s) -}}
{{- fail (printf "services.%s.events.extraDurables: stream %q is not in .Values.streams" $name $s) -}}
{{- end -}}
{{- $_ := set $durables $s (concat (get $durables $s | default list) $extra) -}}
{{- end -}}
{{- range $s := keys $durables | sortAlpha -}}
{{- range $d := get $durables $s -}}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.CREATE.%s.%s" $s $d) -}}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.CREATE.%s.%s.>" $s $d) -}}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.DURABLE.CREATE.%s.%s" $s $d) -}}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.INFO.%s.%s" $s $d) -}}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.MSG.NEXT.%s.%s" $s $d) -}}
{{- $pub = append $pub (printf "$JS.ACK.%s.%s.>" $s $d) -}}
{{- end -}}
{{- if $events.observes -}}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.LIST.%s" $s) -}}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.NAMES.%s" $s) -}}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.INFO.%s.*" $s) -}}
{{- $pub = append $pub (printf "$JS.API.DIRECT.GET.%s" $s) -}}
{{- $pub = append $pub (printf "$JS.API.DIRECT.GET.%s.>" $s) -}}
{{- end -}}
{{- end -}}
{{- if $events.observes -}}
{{- $pub = append $pub "$JS.API.STREAM.INFO.DEADLETTER" -}}
{{- end -}}
{{- toYaml (dict "publish" $pub "subscribe" (list "_INBOX.>")) -}}
{{- end -}}

{{/* Pod-level securityContext (restricted Pod Security Standard). (dict "uid" 65532) */}}
{{- define "jetmart.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level securityContext (restricted Pod Security Standard). */}}
{{- define "jetmart.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* DNS egress rule for NetworkPolicies. */}}
{{- define "jetmart.netpol.dnsEgress" -}}
- to:
    - namespaceSelector: {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector: {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{/*
Egress rule to one dependency: in-chart infra pod when infra.enabled, else the external peers.
(dict "root" $ "component" "postgres" "port" 5432 "external" .Values.networkPolicy.external.postgres)
*/}}
{{- define "jetmart.netpol.dependencyEgress" -}}
{{- if .root.Values.infra.enabled }}
- to:
    - podSelector:
        matchLabels: {{- include "jetmart.selectorLabels" (dict "root" .root "component" .component) | nindent 10 }}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- else }}
- ports:
    - {protocol: TCP, port: {{ .external.port }}}
  {{- with .external.to }}
  to: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}
