{{/*
jetmart.service: every Kubernetes object of ONE service, rendered from its effective settings.
templates/services.yaml calls it once per enabled service; there is no per-service YAML.
Input: (dict "root" $ "svc" $svc) where $svc comes from jetmart.service.values.
*/}}
{{- define "jetmart.service" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $name := $svc.name -}}
{{- $fullName := include "jetmart.componentName" (dict "root" $root "component" $name) -}}
{{- $labels := include "jetmart.componentLabels" (dict "root" $root "component" $name) -}}
{{- $selector := include "jetmart.selectorLabels" (dict "root" $root "component" $name) -}}
{{- $secretName := include "jetmart.service.secretName" (dict "root" $root "svc" $svc) -}}
{{- $bin := printf "/usr/local/bin/jetmart-%s" $name -}}
{{- $keda := and $root.Values.keda.enabled (gt (len ($svc.events.consumes | default dict)) 0) -}}
{{- $hpa := and $svc.autoscaling.enabled (not $keda) -}}
{{- $natsAuthMode := $root.Values.nats.auth.mode -}}
{{- $uses := $svc.uses -}}
{{- /* Secret environment: [name, optional] pairs read from the service's Secret. */ -}}
{{- $secretEnv := list -}}
{{- if $uses.postgres }}{{ $secretEnv = append $secretEnv (list "DATABASE_URL" false) }}{{ end -}}
{{- if $uses.redis }}{{ $secretEnv = append $secretEnv (list "REDIS_URL" false) }}{{ end -}}
{{- if eq $natsAuthMode "password" }}{{ $secretEnv = append $secretEnv (list "NATS_PASSWORD" false) }}{{ end -}}
{{- if $uses.smtp }}{{ $secretEnv = append $secretEnv (list "SMTP_PASSWORD" true) }}{{ end -}}
{{- /* Non-secret environment (the ConfigMap). */ -}}
{{- $env := dict
      "GRPC_ADDR" "0.0.0.0:50051"
      "HTTP_ADDR" "0.0.0.0:8080"
      "NATS_URL" (include "jetmart.natsUrl" $root)
      "STREAM_REPLICAS" (toString $root.Values.nats.streamReplicas)
      "SHUTDOWN_DEADLINE_SECS" (toString $root.Values.runtime.shutdownDeadlineSecs)
      "CONSUMER_BATCH" (toString $root.Values.runtime.consumerBatch)
      "LOG_FORMAT" $root.Values.runtime.logFormat
      "RUST_LOG" $root.Values.runtime.rustLog
      "OTEL_SERVICE_NAME" (printf "jetmart-%s" $name) -}}
{{- if $root.Values.runtime.otlpEndpoint -}}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" $root.Values.runtime.otlpEndpoint -}}
{{- end -}}
{{- if eq $natsAuthMode "password" -}}
{{- $_ := set $env "NATS_USER" $name -}}
{{- else if eq $natsAuthMode "creds" -}}
{{- $_ := set $env "NATS_CREDS_FILE" "/etc/jetmart/nats-creds/nats.creds" -}}
{{- end -}}
{{- if $root.Values.nats.tls.enabled -}}
{{- $_ := set $env "NATS_TLS_CA_FILE" "/etc/jetmart/nats-tls/ca.crt" -}}
{{- if $root.Values.nats.tls.clientCert -}}
{{- $_ := set $env "NATS_TLS_CERT_FILE" "/etc/jetmart/nats-tls/tls.crt" -}}
{{- $_ := set $env "NATS_TLS_KEY_FILE" "/etc/jetmart/nats-tls/tls.key" -}}
{{- end -}}
{{- end -}}
{{- if $uses.smtp -}}
{{- if $root.Values.infra.enabled -}}
{{- $_ := set $env "SMTP_URL" (printf "smtp://%s:1025" (include "jetmart.componentName" (dict "root" $root "component" "mailpit"))) -}}
{{- $_ := set $env "SMTP_STARTTLS" "false" -}}
{{- else -}}
{{- $_ := set $env "SMTP_URL" $root.Values.smtp.url -}}
{{- $_ := set $env "SMTP_STARTTLS" (toString $root.Values.smtp.starttls) -}}
{{- if $root.Values.smtp.username -}}
{{- $_ := set $env "SMTP_USERNAME" $root.Values.smtp.username -}}
{{- end -}}
{{- end -}}
{{- $_ := set $env "SMTP_FROM" $root.Values.smtp.from -}}
{{- end -}}
{{- if eq $name "survey" -}}
{{- $_ := set $env "SURVEY_PUBLIC_URL" $root.Values.surveyPublicUrl -}}
{{- end -}}
{{- range $k, $v := $svc.env -}}
{{- $_ := set $env $k (toString $v) -}}
{{- end }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $fullName }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- $labels | nindent 4 }}
# The services never call the Kubernetes API.
automountServiceAccountToken: false
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $fullName }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- $labels | nindent 4 }}
data: {{- toYaml $env | nindent 2 }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullName }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- $labels | nindent 4 }}
spec:
  type: ClusterIP
  selector: {{- $selector | nindent 4 }}
  ports:
    - name: grpc
      port: 50051
      targetPort: grpc
      protocol: TCP
      appProtocol: kubernetes.io/h2c
    - name: http
      port: 8080
      targetPort: http
      protocol: TCP
      appProtocol: http
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullName }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- $labels | nindent 4 }}
spec:
  {{- if not (or $hpa $keda) }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # Never go below the serving capacity during a rollout; the new pod's init container
      # migrates the schema before it can become ready.
      maxUnavailable: 0
      maxSurge: 1
  selector:
    matchLabels: {{- $selector | nindent 6 }}
  template:
    metadata:
      labels:
        {{- $selector | nindent 8 }}
        jetmart.io/service: "true"
        jetmart.io/nats-client: "true"
        {{- if $uses.postgres }}
        jetmart.io/postgres-client: "true"
        {{- end }}
        {{- if $uses.redis }}
        jetmart.io/redis-client: "true"
        {{- end }}
        {{- if $uses.smtp }}
        jetmart.io/smtp-client: "true"
        {{- end }}
        {{- with $svc.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ toYaml $env | sha256sum }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $fullName }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      # Derived from runtime.shutdownDeadlineSecs (SHUTDOWN_DEADLINE_SECS) so the kubelet never
      # kills a pod that is still draining within its own deadline: preStop sleep + deadline + margin.
      terminationGracePeriodSeconds: {{ include "jetmart.terminationGracePeriodSeconds" $root }}
      securityContext: {{- include "jetmart.podSecurityContext" (dict "uid" 65532) | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with $svc.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- $migrate := and $uses.postgres $svc.migrations.enabled }}
      {{- $seed := and (eq $name "inventory") $root.Values.demo.seedCatalog }}
      {{- if or $migrate $seed }}
      initContainers:
      {{- end }}
      {{- if $migrate }}
        # Migrations run before this version serves, in every new pod. sqlx takes a Postgres
        # advisory lock, so replicas (and a rollout's surge pod) racing here are safe; all but
        # one wait and then find nothing to do.
        # Why not a pre-install/pre-upgrade hook Job: with infra.enabled, Postgres is installed by
        # this same release, and pre-install hooks run before any release object exists, so the
        # database would not be there yet. An init container simply retries (pod restart with
        # back-off) until Postgres answers, in every install mode, and Tilt (which applies no
        # hooks) gets the same behaviour.
        - name: migrate
          image: {{ include "jetmart.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [{{ $bin | quote }}, "migrate"]
          envFrom:
            - configMapRef:
                name: {{ $fullName }}
          # Same environment as the service: config parsing is shared with `serve`.
          env: {{- include "jetmart.secretEnv" (dict "env" $secretEnv "secretName" $secretName) | nindent 12 }}
          resources: {{- toYaml $svc.migrationResources | nindent 12 }}
          securityContext: {{- include "jetmart.containerSecurityContext" . | nindent 12 }}
          volumeMounts: {{- include "jetmart.service.volumeMounts" $root | nindent 12 }}
      {{- end }}
      {{- if $seed }}
        # demo.seedCatalog: the demo catalog's SKUs and initial stock (idempotent: each SKU's
        # seeding adjustment has a fixed idempotency key, so restarts and replicas add nothing
        # twice). Without it the smoke test's order and every load-tool order is CANCELLED.
        - name: seed-demo
          image: {{ include "jetmart.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [{{ $bin | quote }}, "seed-demo"]
          envFrom:
            - configMapRef:
                name: {{ $fullName }}
          env: {{- include "jetmart.secretEnv" (dict "env" $secretEnv "secretName" $secretName) | nindent 12 }}
          resources: {{- toYaml $svc.migrationResources | nindent 12 }}
          securityContext: {{- include "jetmart.containerSecurityContext" . | nindent 12 }}
          volumeMounts: {{- include "jetmart.service.volumeMounts" $root | nindent 12 }}
      {{- end }}
      containers:
        - name: {{ $name }}
          image: {{ include "jetmart.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [{{ $bin | quote }}, "serve"]
          ports:
            - {name: grpc, containerPort: 50051, protocol: TCP}
            - {name: http, containerPort: 8080, protocol: TCP}
          envFrom:
            - configMapRef:
                name: {{ $fullName }}
          {{- with $secretEnv }}
          env: {{- include "jetmart.secretEnv" (dict "env" . "secretName" $secretName) | nindent 12 }}
          {{- end }}
          startupProbe: {{- include "jetmart.probe" (dict "probe" $svc.probes.startup "path" "/healthz") | nindent 12 }}
          readinessProbe: {{- include "jetmart.probe" (dict "probe" $svc.probes.readiness "path" "/readyz") | nindent 12 }}
          livenessProbe: {{- include "jetmart.probe" (dict "probe" $svc.probes.liveness "path" "/healthz") | nindent 12 }}
          lifecycle:
            preStop:
              # Native sleep action (the distroless image has no shell): keep serving while the
              # endpoint removal propagates, then the kubelet sends SIGTERM and the drain starts.
              sleep:
                seconds: {{ $root.Values.runtime.preStopSleepSecs }}
          resources: {{- toYaml $svc.resources | nindent 12 }}
          securityContext: {{- include "jetmart.containerSecurityContext" . | nindent 12 }}
          volumeMounts: {{- include "jetmart.service.volumeMounts" $root | nindent 12 }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 64Mi}
        {{- if eq $natsAuthMode "creds" }}
        - name: nats-creds
          secret:
            secretName: {{ $secretName }}
            defaultMode: 0440
            items: [{key: nats.creds, path: nats.creds}]
        {{- end }}
        {{- if $root.Values.nats.tls.enabled }}
        - name: nats-tls
          secret:
            secretName: {{ required "nats.tls.secretName is required with nats.tls.enabled" $root.Values.nats.tls.secretName }}
            defaultMode: 0440
        {{- end }}
      {{- if $svc.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
        - maxSkew: {{ $svc.topologySpread.maxSkew }}
          topologyKey: {{ $key }}
          whenUnsatisfiable: {{ $svc.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels: {{- $selector | nindent 14 }}
          # Spread each rollout's pods, not old and new together.
          matchLabelKeys: [pod-template-hash]
        {{- end }}
      {{- end }}
      {{- with $svc.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity: {{- toYaml . | nindent 8 }}
      {{- end }}
{{- if $hpa }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $fullName }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- $labels | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullName }}
  minReplicas: {{ $svc.autoscaling.minReplicas }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage }}
  behavior: {{- include "jetmart.hpaBehavior" $svc | nindent 4 }}
{{- end }}
{{- if $keda }}
---
# KEDA owns the HPA of this Deployment: CPU plus the lag of each durable consumer the service
# owns (consumer named after the service, on every stream it reads; see the event-flow matrix).
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $fullName }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- $labels | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullName }}
  pollingInterval: {{ $root.Values.keda.pollingInterval }}
  cooldownPeriod: {{ $root.Values.keda.cooldownPeriod }}
  minReplicaCount: {{ $svc.autoscaling.minReplicas }}
  maxReplicaCount: {{ $svc.autoscaling.maxReplicas }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior: {{- include "jetmart.hpaBehavior" $svc | nindent 8 }}
  triggers:
    - type: cpu
      metricType: Utilization
      metadata:
        value: {{ $svc.autoscaling.targetCPUUtilizationPercentage | quote }}
    {{- range $stream := keys $svc.events.consumes | sortAlpha }}
    - type: nats-jetstream
      metadata:
        natsServerMonitoringEndpoint: {{ include "jetmart.natsMonitoringEndpoint" $root | quote }}
        account: {{ $root.Values.nats.account | quote }}
        stream: {{ $stream | quote }}
        consumer: {{ $name | quote }}
        lagThreshold: {{ $svc.keda.lagThreshold | quote }}
        activationLagThreshold: {{ $svc.keda.activationLagThreshold | quote }}
    {{- end }}
{{- end }}
{{- if $svc.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $fullName }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- $labels | nindent 4 }}
spec:
  selector:
    matchLabels: {{- $selector | nindent 6 }}
  {{- if not (kindIs "invalid" $svc.pdb.minAvailable) }}
  minAvailable: {{ $svc.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $svc.pdb.maxUnavailable }}
  {{- end }}
  # A crash-looping pod must not block node drains.
  unhealthyPodEvictionPolicy: AlwaysAllow
{{- end }}
{{- if $root.Values.networkPolicy.enabled }}
---
# Only the flows of the event-flow design: gRPC/HTTP in from this namespace, out to DNS, NATS and
# this service's own backing services.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $fullName }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- $labels | nindent 4 }}
spec:
  podSelector:
    matchLabels: {{- $selector | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    - from:
        - podSelector: {}
      ports:
        - {protocol: TCP, port: 50051}
        - {protocol: TCP, port: 8080}
    {{- with $root.Values.networkPolicy.metricsFrom }}
    - from: {{- toYaml . | nindent 8 }}
      ports:
        - {protocol: TCP, port: 8080}
    {{- end }}
    {{- with $svc.networkPolicy.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  egress:
    {{- include "jetmart.netpol.dnsEgress" $root | nindent 4 }}
    {{- include "jetmart.netpol.dependencyEgress" (dict "root" $root "component" "nats" "port" 4222 "external" $root.Values.networkPolicy.external.nats) | nindent 4 }}
    {{- if $uses.postgres }}
    {{- include "jetmart.netpol.dependencyEgress" (dict "root" $root "component" "postgres" "port" 5432 "external" $root.Values.networkPolicy.external.postgres) | nindent 4 }}
    {{- end }}
    {{- if $uses.redis }}
    {{- include "jetmart.netpol.dependencyEgress" (dict "root" $root "component" "redis" "port" 6379 "external" $root.Values.networkPolicy.external.redis) | nindent 4 }}
    {{- end }}
    {{- if $uses.smtp }}
    {{- include "jetmart.netpol.dependencyEgress" (dict "root" $root "component" "mailpit" "port" 1025 "external" $root.Values.networkPolicy.external.smtp) | nindent 4 }}
    {{- end }}
    {{- if $root.Values.runtime.otlpEndpoint }}
    - ports:
        - {protocol: TCP, port: {{ $root.Values.networkPolicy.external.otlp.port }}}
      {{- with $root.Values.networkPolicy.external.otlp.to }}
      to: {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- with $svc.networkPolicy.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* Env entries from a Secret: (dict "env" (list (list "NAME" optional) ...) "secretName" "x") */}}
{{- define "jetmart.secretEnv" -}}
{{- range .env }}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ $.secretName }}
      key: {{ index . 0 }}
      {{- if index . 1 }}
      optional: true
      {{- end }}
{{- end }}
{{- end -}}

{{/* Volume mounts shared by the service container and its migration init container. */}}
{{- define "jetmart.service.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
{{- if eq .Values.nats.auth.mode "creds" }}
- {name: nats-creds, mountPath: /etc/jetmart/nats-creds, readOnly: true}
{{- end }}
{{- if .Values.nats.tls.enabled }}
- {name: nats-tls, mountPath: /etc/jetmart/nats-tls, readOnly: true}
{{- end }}
{{- end -}}

{{/* One probe: (dict "probe" $svc.probes.readiness "path" "/readyz") */}}
{{- define "jetmart.probe" -}}
{{- if eq .probe.type "grpc" }}
grpc:
  port: 50051
{{- else }}
httpGet:
  path: {{ .path }}
  port: http
{{- end }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end -}}

{{/* HPA scaling behaviour, shared by the HPA and the KEDA-managed HPA. Input: $svc */}}
{{- define "jetmart.hpaBehavior" -}}
scaleDown:
  stabilizationWindowSeconds: {{ .autoscaling.scaleDownStabilizationSeconds }}
  selectPolicy: Min
  policies:
    - {type: Percent, value: 50, periodSeconds: 60}
    - {type: Pods, value: 1, periodSeconds: 60}
scaleUp:
  stabilizationWindowSeconds: 0
  selectPolicy: Max
  policies:
    - {type: Percent, value: 100, periodSeconds: 30}
    - {type: Pods, value: 2, periodSeconds: 30}
{{- end -}}
