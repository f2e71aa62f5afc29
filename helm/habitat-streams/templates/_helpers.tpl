{{/* The release's prefix of every object's name. */}}
{{- define "habitat.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; pass (dict "root" $ "component" "<name>"). */}}
{{- define "habitat.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "habitat.selector" . }}
{{- end -}}

{{/* Selector labels; pass (dict "root" $ "component" "<name>"). */}}
{{- define "habitat.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "habitat.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) | quote }}
{{- end -}}

{{/* Kafka, registry and logging variables every program reads. */}}
{{- define "habitat.kafkaEnv" -}}
- name: HABITAT_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: HABITAT_SCHEMA_REGISTRY_URL
  value: {{ .Values.schemaRegistry.url | quote }}
{{- range $key, $value := .Values.kafka.settings }}
- name: {{ printf "HABITAT_KAFKA_%s" ($key | upper | replace "." "_") }}
  value: {{ $value | quote }}
{{- end }}
{{- with .Values.kafka.passwordSecret.name }}
- name: HABITAT_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.kafka.passwordSecret.key }}
{{- end }}
{{- with .Values.schemaRegistry.authSecret.name }}
- name: HABITAT_SCHEMA_REGISTRY_AUTH
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.schemaRegistry.authSecret.key }}
{{- end }}
- name: HABITAT_LOG
  value: {{ .Values.logLevel | quote }}
- name: HABITAT_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end -}}

{{/* The pod's name as the instance id: unique per pod, so each has its own transactional id. */}}
{{- define "habitat.instanceEnv" -}}
- name: HABITAT_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{- define "habitat.databaseEnv" -}}
- name: HABITAT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.urlSecret.name }}
      key: {{ .Values.database.urlSecret.key }}
{{- end -}}

{{/* The service account every pod runs as. */}}
{{- define "habitat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "habitat.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Variables added to a program's own: extraEnv (every program), then its own env map
     (NAME: value); later entries win. Pass (dict "root" $ "env" <map>). */}}
{{- define "habitat.extraEnv" -}}
{{- with .root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- range $name, $value := .env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* The pod's annotations: the scrape annotations at `port`, then podAnnotations. Pass
     (dict "root" $ "port" <port>). */}}
{{- define "habitat.podAnnotations" -}}
{{ include "habitat.scrapeAnnotations" .port }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod settings every program shares. */}}
{{- define "habitat.podSpec" -}}
enableServiceLinks: false
serviceAccountName: {{ include "habitat.serviceAccountName" . }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Liveness on /healthz, readiness on /readyz, at the named port. */}}
{{- define "habitat.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ . }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: {{ . }}}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ . }}}
  periodSeconds: 5
  failureThreshold: 3
{{- end -}}

{{- define "habitat.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end -}}
